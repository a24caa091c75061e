"""Step 1 of compound scaling: the alpha/beta/gamma grid search (paper Sec. 3.3), run.

Every grid point (:func:`~effnet.search.grid.enumerate_grid`) is a job of
the queue (:mod:`effnet.proxy.queue`): the base network scaled at phi = 1 (depth alpha,
width beta, resolution gamma), its MACs measured and compared with the
target (2x the base's), trained by the proxy trainer
(:func:`~effnet.proxy.trainer.train_proxy`, the same one the scaling study
uses) for several seeds, and scored on a validation split held out of the
training set.

The jobs live in an Optuna RDB storage (SQLite file or PostgreSQL), so a rerun
resumes (finished candidates are never trained again) and several processes
or machines can share one search (``postgresql://...``).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import EffnetError, ParameterError
from ..proxy.candidates import Cost, measure
from ..proxy.queue import (
    GRACE_S,
    HEARTBEAT_S,
    JobContext,
    job_states,
    open_storage,
    run_jobs,
    storage_url,
)
from ..proxy.trainer import ProxyData, Trainer, train_proxy
from .config import DEFAULT_STUDY, SearchConfig
from .grid import GridPoint
from .results import ranked_rows


@dataclass
class SearchResult:
    """What a search run leaves: the ranked rows and what this run did."""

    study_name: str
    storage: str
    rows: list[dict]
    trained_now: list[str]
    base_cost: Cost
    running_elsewhere: int = 0
    native: int | None = None

    @property
    def best(self) -> dict | None:
        done = [r for r in self.rows if r["status"] == "complete"]
        return done[0] if done else None


def _pruner(cfg: SearchConfig, prune: bool):
    """Optuna's median pruner, from the end of the first seed's run on (or none).

    A candidate whose score at a step is below the median of the finished
    candidates' at the same step skips its remaining epochs and seeds. Steps
    count epochs over all seeds (seed i's epoch e is step i * epochs + e);
    earlier epochs of the first seed are too noisy (warm-up) to judge by.
    """
    import optuna

    if not prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=cfg.recipe.epochs)


def _candidate_attrs(cfg: SearchConfig, point: GridPoint, base_cost: Cost,
                     shapes: tuple[int, int]) -> dict[str, Any]:
    """The candidate's spec and measured cost, against the MAC target."""
    scaled = cfg.scaled(point)
    cost = measure(scaled, *shapes)
    ratio = cost.macs / base_cost.macs
    return {**point.as_dict(), "resolution": scaled.resolution,
            "width_mult": scaled.width_mult, "depth_mult": scaled.depth_mult,
            "params": cost.params, "macs": cost.macs, "base_macs": base_cost.macs,
            "mac_ratio": ratio, "mac_target": cfg.target, "mac_distance": ratio / cfg.target - 1}


def _train_seeds(ctx: JobContext, cfg: SearchConfig, point: GridPoint, data: ProxyData,
                 trainer: Trainer, status: Callable[[str], None]) -> dict[str, Any]:
    """Train one candidate for every seed; report each epoch to the pruner."""
    import torch

    scaled = cfg.scaled(point)
    epochs = cfg.recipe.epochs
    last_step = cfg.seeds * epochs
    tops: list[float] = []
    curves: list[list[float]] = []
    seconds, steps = 0.0, [0]

    def report(step: int, value: float) -> None:
        steps[0] = max(steps[0], step)
        ctx.update({"epochs_done": steps[0], "last_val_top1": value})
        if step < last_step:  # the last step ends the run: nothing left to save by pruning
            ctx.report(step, value)

    ctx.set("epochs_budget", last_step)
    for i in range(cfg.seeds):
        status(f"{point.label} seed {i + 1}/{cfg.seeds}")
        torch.manual_seed(i)
        model = scaled.build(num_classes=data.num_classes, in_chans=data.in_chans)
        t0 = time.perf_counter()
        try:
            out = trainer(model, scaled.resolution, data, cfg.recipe, i,
                          lambda epoch, top1, i=i: report(i * epochs + epoch, top1))
        except BaseException:  # pruned (or failed): keep the time it took
            ctx.set("seconds", seconds + time.perf_counter() - t0)
            raise
        seconds += time.perf_counter() - t0
        if not isinstance(out, dict) or "val_top1" not in out:
            raise EffnetError("the trainer must return a dict with 'val_top1' (a fraction), "
                              f"got {type(out).__name__}: see effnet.proxy.trainer.train_proxy")
        tops.append(float(out["val_top1"]))
        curves.append([float(v) for v in out.get("curve", [])])
        ctx.update({"val_top1_seeds": tops, "seconds": seconds})
        if i + 1 < cfg.seeds:
            report((i + 1) * epochs, tops[-1])
    mean = statistics.fmean(tops)
    return {"val_top1": mean, "value": mean, "val_top1_seeds": tops, "val_top1_curves": curves,
            "val_top1_std": statistics.stdev(tops) if len(tops) > 1 else 0.0,
            "seconds": seconds, "epochs_done": last_step, "epochs_budget": last_step}


def _work(cfg: SearchConfig, by_label: dict[str, GridPoint], base_cost: Cost, data: ProxyData,
          trainer: Trainer, status: Callable[[str], None]) -> Callable[[JobContext], dict]:
    """The queue's work function: measure one candidate, skip it if off budget, else train it."""
    import optuna

    def work(ctx: JobContext) -> dict:
        point = by_label[ctx.key]
        attrs = _candidate_attrs(cfg, point, base_cost, (data.num_classes, data.in_chans))
        ctx.update(attrs)
        if cfg.mac_tolerance is not None and abs(attrs["mac_distance"]) > cfg.mac_tolerance:
            ctx.set("skipped", "off-budget")
            raise optuna.TrialPruned("off the MAC budget")
        return {**attrs, **_train_seeds(ctx, cfg, point, data, trainer, status)}

    return work


def _states(url: str, study_name: str) -> dict[str, str]:
    try:
        return job_states(url, study_name)
    except EffnetError:  # no storage or no study yet
        return {}


def run_search(cfg: SearchConfig, storage: str = "sqlite:///search.db",
               study_name: str = DEFAULT_STUDY, trainer: Trainer | None = None,
               data: ProxyData | None = None, prune: bool = False, progress: bool = True,
               max_candidates: int | None = None, root: str | None = None,
               download: bool = False, heartbeat_interval: int = HEARTBEAT_S,
               grace_period: int = GRACE_S) -> SearchResult:
    """Run (or resume, or join) the grid search; return the ranked table of every grid point.

    `max_candidates` stops this worker after that many (the rest stay queued
    for a rerun or other workers). `trainer` defaults to
    :func:`~effnet.proxy.trainer.train_proxy`; `data` to the proxy data of
    `cfg.dataset` (its classes and channels size every model).
    """
    from tqdm.auto import tqdm

    url = storage_url(storage)
    points = cfg.points()
    if not points:
        raise ParameterError(f"the grid is empty: no (alpha, beta, gamma) with step "
                             f"{cfg.grid_step} has alpha*beta^2*gamma^2 within {cfg.tolerance} "
                             f"of {cfg.target}; raise tolerance or lower grid_step",
                             "tolerance", "grid_step")
    store = open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    if data is None:
        data = ProxyData(cfg.dataset, root, cfg.recipe, download=download)
    base_cost = measure(cfg.base_scaled(), data.num_classes, data.in_chans)
    by_label = {p.label: p for p in points}
    done0 = sum(s == "done" for s in _states(url, study_name).values())
    bar = tqdm(total=len(points), initial=done0, desc="grid search", unit="cand",
               disable=not progress, dynamic_ncols=True)
    trained: list[str] = []

    def on_done(key: str, result: dict) -> None:
        trained.append(key)
        bar.update(1)

    work = _work(cfg, by_label, base_cost, data, trainer or train_proxy,
                 lambda s: bar.set_postfix_str(s, refresh=True))
    # Queued in a fixed shuffled order: the pruner's first comparisons (and a search stopped
    # early) then see a fair sample of the grid, not only its low-alpha corner.
    queued = list(points)
    random.Random(0).shuffle(queued)
    try:
        results = run_jobs(store, study_name, {p.label: p.as_dict() for p in queued}, work,
                           identity=cfg.identity(), max_jobs=max_candidates,
                           pruner=_pruner(cfg, prune), on_done=on_done)
    finally:
        bar.close()
    states = _states(url, study_name)
    return SearchResult(study_name, url, ranked_rows(points, results, states), trained,
                        base_cost, sum(s == "running" for s in states.values()),
                        getattr(data, "native", None))
