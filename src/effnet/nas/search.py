"""The baseline search (Tan & Le 2019, Sec. 4): Optuna over the MnasNet-style space.

Each trial picks one choice per stage (:class:`~.space.SearchSpace`), builds
the candidate's proxy (:class:`~.proxy.Proxy`), measures its MACs on the
built model, trains it with the proxy trainer and scores it with the paper's
reward ACC x (MACs / T)^w (:func:`~.reward.reward`).

Why not MnasNet's reinforcement-learning controller: MnasNet trained an RNN
controller with PPO over about 8,000 sampled models, each trained for 5
epochs on ImageNet. A policy-gradient controller needs thousands of rewards
before it beats random sampling; a run here affords tens. At that budget a
model-based sampler that uses every finished trial is the better tool:
Optuna's TPE (Bergstra et al. 2011) for the single reward, and NSGA-II
(Deb et al. 2002) with ``multi_objective`` to keep the whole
accuracy-against-MACs front instead of one trade-off fixed by w. Hopeless
trials are stopped early by Optuna's median pruner through the trainer's
per-evaluation hook (single objective only: Optuna does not prune
multi-objective trials).

Storage works as in `effnet search` (:mod:`effnet.proxy.storage`): trials
live in an Optuna RDB storage, so a rerun resumes (finished trials are
kept and only the missing ones run), several workers or machines share one
study through ``postgresql://...``, and a worker that dies stops writing its
trial's heartbeat: after the grace period another worker fails it and
Optuna's retry callback queues the same architecture again.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import EffnetError, ParameterError
from ..io_utils import first_line
from ..proxy.queue import SKIP_ATTR, mark_started, serve
from ..proxy.storage import GRACE_S, HEARTBEAT_S, open_storage, storage_url
from ..proxy.trainer import ProxyData, Trainer, load_trainer, train_proxy
from ..proxy.workers import quiet_optuna, run_parallel, start_worker
from ..spec import spec_to_dict
from .proxy import Proxy
from .reward import DEFAULT_W, reward
from .space import SearchSpace, describe

DEFAULT_STUDY = "effnet-nas"
KIND = "baseline-search"
IDENTITY_ATTR = "effnet_nas"   # study user attr: the settings a rerun must match
ROLE_ATTR = "role"             # trial user attr: "baseline" for the enqueued base


@dataclass(frozen=True)
class NasConfig:
    """Everything that defines a baseline search (a stored one resumes only with the same).

    `target_macs` is T of the reward, in MACs of the proxy model (None: the
    proxy of the space's base, i.e. B0's, as measured). `multi_objective`
    maximises accuracy and minimises MACs with NSGA-II instead of the
    reward with TPE. The number of trials is not part of it: rerun with more
    to extend a search.
    """

    space: SearchSpace = field(default_factory=SearchSpace)
    proxy: Proxy = field(default_factory=Proxy)
    target_macs: float | None = None
    w: float = DEFAULT_W
    multi_objective: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target_macs is not None and not self.target_macs > 0:
            raise ParameterError(f"target_macs must be > 0, got {self.target_macs}",
                                 "target_macs")
        reward(0.5, 1.0, 1.0, self.w)  # validates w

    def identity(self, target: float) -> dict[str, Any]:
        return json.loads(json.dumps({
            "kind": KIND, "base": spec_to_dict(self.space.base),
            "options": {k: list(v) for k, v in self.space.options().items()},
            "proxy": self.proxy.identity(), "target_macs": target, "w": self.w,
            "multi_objective": self.multi_objective, "seed": self.seed}))


@dataclass
class NasResult:
    """Every trial of the stored search and what this worker did."""

    study_name: str
    storage: str
    target_macs: float
    base_cost: Any
    rows: list[dict]
    ran_now: int

    @property
    def best(self) -> dict | None:
        """The finished trial with the highest reward (ties: fewer MACs, then lower number)."""
        done = [r for r in self.rows if r["status"] == "complete"]
        return max(done, key=lambda r: (r["reward"], -r["macs"], -r["trial"])) if done else None


# ---------------------------------------------------------------- trial slots
def _live(t) -> bool:
    from optuna.trial import TrialState

    return SKIP_ATTR not in t.user_attrs and t.state in (
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def _slot_taken(trials, number: int, n_trials: int, role: str | None) -> str | None:
    """Why trial `number` must run nothing, or None.

    A search of N trials runs the first N live trials by number: any worker
    decides alike, so N trials run in all whatever the number of workers. A
    failed trial frees its slot (a retry of a dead worker's trial is a new,
    live one). The enqueued baseline runs once even if two new workers both
    enqueued it.
    """
    before = [t for t in trials if t.number < number and _live(t)]
    if role == "baseline" and any(t.user_attrs.get(ROLE_ATTR) == "baseline" for t in before):
        return "duplicate baseline"
    if len(before) >= n_trials:
        return "no trial left"
    return None


def _counts(trials) -> dict[str, int]:
    from optuna.trial import TrialState

    live = [t for t in trials if _live(t)]
    return {"live": len(live),
            "waiting": sum(t.state == TrialState.WAITING for t in live),
            "running": sum(t.state == TrialState.RUNNING for t in live),
            "done": sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in live)}


# ---------------------------------------------------------------- one trial
def _objective(cfg: NasConfig, n_trials: int, data: ProxyData, trainer: Trainer, target: float,
               prune: bool, status: Callable[[str], None], ran: list[int]):
    """The function Study.optimize calls; `ran[0]` counts the trials this worker trained."""
    import optuna
    import torch

    shapes = (data.num_classes, data.in_chans)
    proxy = cfg.proxy

    def objective(trial):
        reason = _slot_taken(trial.study.get_trials(deepcopy=False), trial.number, n_trials,
                             trial.user_attrs.get(ROLE_ATTR))
        if reason:
            trial.set_user_attr(SKIP_ATTR, reason)
            raise optuna.TrialPruned(reason)
        mark_started(trial)
        spec = cfg.space.decode(cfg.space.suggest(trial), name=f"effnet-nas-{trial.number}")
        cost = proxy.measure(spec, *shapes)
        trial.set_user_attr("spec", spec_to_dict(spec))
        trial.set_user_attr("cost", {"macs": cost.macs, "params": cost.params})
        status(f"trial {trial.number}: {cost.macs / 1e6:.2f} M MACs")

        def on_epoch(k: int, top1: float) -> None:
            trial.set_user_attr("curve", [*trial.user_attrs.get("curve", []), float(top1)])
            if prune and not cfg.multi_objective:
                trial.report(reward(float(top1), cost.macs, target, cfg.w), k)
                if k < (proxy.recipe.evals or proxy.recipe.epochs) and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after evaluation {k}")

        trial.set_user_attr("curve", [])
        torch.manual_seed(cfg.seed)
        model = proxy.build(spec, *shapes)
        t0 = time.perf_counter()
        ran[0] += 1
        try:
            out = trainer(model, proxy.resolution, data, proxy.recipe, cfg.seed, on_epoch)
        except optuna.TrialPruned:
            raise
        except BaseException as err:
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", first_line(err))
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - t0)
        if not isinstance(out, dict) or "val_top1" not in out:
            raise EffnetError("the trainer must return a dict with 'val_top1' (a fraction): see "
                              "effnet.proxy.trainer.train_proxy")
        acc = float(out["val_top1"])
        r = reward(acc, cost.macs, target, cfg.w)
        trial.set_user_attr("accuracy", acc)
        trial.set_user_attr("reward", r)
        return (acc, float(cost.macs)) if cfg.multi_objective else r

    return objective


# ---------------------------------------------------------------- the study
def _sampler(cfg: NasConfig, worker: int, offset: int = 0):
    """TPE (or NSGA-II) seeded from the config's seed, the worker's index and `offset`.

    Workers sharing a study must not draw the same points: `run_workers` gives
    each its index, and `offset` (the trials already stored when a worker
    joins) separates a rerun and later joiners from the first run.
    """
    import optuna

    seed = cfg.seed + 1000 * worker + offset
    if cfg.multi_objective:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    with quiet_optuna():  # constant_liar (parallel workers avoid each other) is experimental
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, constant_liar=True,
                                          multivariate=True, group=False)


def _pruner(prune: bool):
    import optuna

    if not prune:
        return optuna.pruners.NopPruner()
    # From the second evaluation on, once 5 trials have finished: the median of finished
    # trials' rewards at the same evaluation decides. The first evaluation comes during the
    # learning-rate warm-up, where scores are near chance and rank nothing (Optuna prunes
    # only at steps >= n_warmup_steps).
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)


def _open_study(store, cfg: NasConfig, study_name: str, target: float, worker: int,
                prune: bool):
    import optuna

    directions = ["maximize", "minimize"] if cfg.multi_objective else ["maximize"]
    offset = 0
    with contextlib.suppress(KeyError), quiet_optuna():
        offset = len(optuna.load_study(study_name=study_name, storage=store).trials)
    with quiet_optuna():
        study = optuna.create_study(storage=store, study_name=study_name, directions=directions,
                                    sampler=_sampler(cfg, worker, offset),
                                    pruner=_pruner(prune and not cfg.multi_objective),
                                    load_if_exists=True)
    mine = cfg.identity(target)
    if study.user_attrs.get(IDENTITY_ATTR) is None:
        if study.get_trials(deepcopy=False):
            raise ParameterError(f"study {study_name!r} was not made by `effnet nas`: pass "
                                 "another study_name or storage", "study_name", "storage")
        study.set_user_attr(IDENTITY_ATTR, mine)
        # The base (B0) is trial 0: the report compares every trial with it.
        study.enqueue_trial(cfg.space.baseline_choice(), user_attrs={ROLE_ATTR: "baseline"})
    old = study.user_attrs[IDENTITY_ATTR]
    diff = [k for k in sorted(set(old) | set(mine)) if old.get(k) != mine.get(k)]
    if diff:
        raise ParameterError(f"study {study_name!r} was run with other settings "
                             f"({', '.join(diff)} differ): rerun with the same settings, or a new "
                             "study_name or storage", "study_name", "storage")
    return study


def run_nas(cfg: NasConfig, n_trials: int, storage: str, study_name: str = DEFAULT_STUDY,
            trainer: Trainer | None = None, data: ProxyData | None = None, prune: bool = True,
            progress: bool = True, worker: int = 0, root: str | None = None,
            heartbeat_interval: int = HEARTBEAT_S, grace_period: int = GRACE_S,
            poll_s: float | None = None) -> NasResult:
    """Run (or resume, or join) the baseline search until `n_trials` trials are done.

    Returns every trial of the stored study (:func:`trial_rows`). `trainer`
    defaults to :func:`~effnet.proxy.trainer.train_proxy`, `data` to the
    proxy's dataset; `worker` (0, 1, ...) offsets the sampler's seed.
    """
    from tqdm.auto import tqdm

    if n_trials < 1:
        raise ParameterError(f"n_trials must be >= 1, got {n_trials}", "n_trials")
    url = storage_url(storage)
    store = open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    if data is None:
        data = ProxyData(cfg.proxy.dataset, root, cfg.proxy.recipe)
    base_cost = cfg.proxy.measure(cfg.space.base, data.num_classes, data.in_chans)
    target = float(cfg.target_macs or base_cost.macs)
    study = _open_study(store, cfg, study_name, target, worker, prune)
    counts = _counts(study.get_trials(deepcopy=False))
    bar = tqdm(total=n_trials, initial=min(n_trials, counts["done"]), desc="baseline search",
               unit="trial", disable=not progress, dynamic_ncols=True)
    ran = [0]
    objective = _objective(cfg, n_trials, data, trainer or train_proxy, target, prune,
                           lambda s: bar.set_postfix_str(s, refresh=True), ran)

    def next_action() -> str:
        counts = _counts(study.get_trials(deepcopy=False))
        bar.n = min(n_trials, counts["done"])
        bar.refresh()
        if counts["live"] < n_trials or counts["waiting"]:
            return "run"
        # other workers (or dead ones) hold the last trials
        return "wait" if counts["running"] else "stop"

    try:
        serve(study, store, objective, next_action,
              poll=poll_s if poll_s is not None else min(float(heartbeat_interval), 5.0))
    finally:
        bar.close()
    return NasResult(study_name, url, target, base_cost, trial_rows(study), ran[0])


def trial_rows(study) -> list[dict]:
    """One row per trial that ran (complete, pruned or failed), by trial number."""
    from optuna.trial import TrialState

    name = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
            TrialState.FAIL: "failed", TrialState.RUNNING: "running"}
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if SKIP_ATTR in a or "spec" not in a or t.state not in name:
            continue
        curve = a.get("curve") or []
        acc = a.get("accuracy", curve[-1] if curve else None)
        rows.append({"trial": t.number, "status": name[t.state],
                     "baseline": a.get(ROLE_ATTR) == "baseline", "spec": a["spec"],
                     "params": a["cost"]["params"], "macs": a["cost"]["macs"],
                     "accuracy": acc, "reward": a.get("reward"), "curve": curve,
                     "seconds": a.get("seconds"), "error": a.get("error")})
    return rows


def describe_row(row: dict) -> str:
    """The compact stage description of a trial row's spec."""
    from ..spec import spec_from_dict

    with contextlib.suppress(EffnetError):
        return describe(spec_from_dict(row["spec"]))
    return "?"


def nas_worker(cfg: NasConfig, n_trials: int, storage: str, study_name: str, root: str | None,
               trainer_ref: str | None, heartbeat_interval: int, grace_period: int, worker: int,
               threads: int = 1, progress: bool = False, prune: bool = True) -> int:
    """One worker process of `effnet nas --workers K`: trains trials until the search is done.

    Returns the number of trials it trained.
    """
    start_worker(threads)
    result = run_nas(cfg, n_trials, storage, study_name, trainer=load_trainer(trainer_ref),
                     prune=prune, progress=progress, worker=worker, root=root,
                     heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    return result.ran_now


def run_workers(cfg: NasConfig, n_trials: int, storage: str, study_name: str = DEFAULT_STUDY,
                workers: int = 1, root: str | None = None, trainer_ref: str | None = None,
                heartbeat_interval: int = HEARTBEAT_S, grace_period: int = GRACE_S,
                progress: bool = True, prune: bool = True) -> None:
    """Run the search in `workers` processes (one torch thread each) sharing `storage`."""
    if workers < 1:
        raise ParameterError(f"workers must be >= 1, got {workers}", "workers")
    args = (cfg, n_trials, storage, study_name, root, trainer_ref, heartbeat_interval,
            grace_period)
    run_parallel(nas_worker, [(*args, i, 1, progress and i == 0, prune) for i in range(workers)])


def load_result(cfg: NasConfig, storage: str, study_name: str = DEFAULT_STUDY,
                data: ProxyData | None = None, root: str | None = None) -> NasResult:
    """The stored search as a :class:`NasResult` (for the report), without training anything."""
    import optuna

    url = storage_url(storage)
    store = open_storage(url, must_exist=True)
    try:
        with quiet_optuna():
            study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        raise EffnetError(f"no search {study_name!r} in {url}: run `effnet nas` first") from None
    if data is None:
        data = ProxyData(cfg.proxy.dataset, root, cfg.proxy.recipe)
    base_cost = cfg.proxy.measure(cfg.space.base, data.num_classes, data.in_chans)
    ident = study.user_attrs.get(IDENTITY_ATTR) or {}
    target = float(ident.get("target_macs") or cfg.target_macs or base_cost.macs)
    return NasResult(study_name, url, target, base_cost, trial_rows(study), 0)
