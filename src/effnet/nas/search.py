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
from .pick import picked, run_pick, stored_picks
from .proxy import Proxy
from .reward import DEFAULT_W, reward
from .space import SearchSpace, describe
from .trials import (
    ROLE_ATTR,
    first_trials,
    make_pruner,
    make_sampler,
    slot_taken,
    spent,
    trial_counts,
)

DEFAULT_STUDY = "effnet-nas"
SAMPLERS = ("evolution", "tpe", "random")
KIND = "baseline-search"
IDENTITY_ATTR = "effnet_nas"   # study user attr: the settings a rerun must match


@dataclass(frozen=True)
class NasConfig:
    """Everything that defines a baseline search (a stored one resumes only with the same).

    `target_macs` is T of the reward, in MACs of the proxy model (None: the
    proxy of the space's base, i.e. B0's, as measured). `multi_objective`
    maximises accuracy and minimises MACs with NSGA-II instead of the
    reward. `sampler` is "evolution" (:mod:`.evolution`, the first `startup`
    trials its random population), "tpe" (`startup` random trials first) or
    "random". Successive halving judges trials at evaluation `first_rung` of
    the recipe and every `eta` times further; it promotes the best 1/eta.
    `top_k` finished trials are retrained with `pick_seeds` new seeds and the
    pick is the best mean (:mod:`.pick`). The number of trials and the budget
    are not part of it, nor the pick's settings: rerun with more to extend.
    """

    space: SearchSpace = field(default_factory=SearchSpace)
    proxy: Proxy = field(default_factory=Proxy)
    target_macs: float | None = None
    w: float = DEFAULT_W
    multi_objective: bool = False
    seed: int = 0
    sampler: str = "evolution"
    startup: int = 12
    eta: int = 3
    first_rung: int = 2
    top_k: int = 3
    pick_seeds: int = 3

    def __post_init__(self) -> None:
        if self.target_macs is not None and not self.target_macs > 0:
            raise ParameterError(f"target_macs must be > 0, got {self.target_macs}",
                                 "target_macs")
        reward(0.5, 1.0, 1.0, self.w)  # validates w
        if self.sampler not in SAMPLERS:
            raise ParameterError(f"unknown sampler {self.sampler!r}: use one of "
                                 f"{', '.join(SAMPLERS)}", "sampler")
        for name, low in (("startup", 2), ("eta", 2), ("first_rung", 1), ("top_k", 0),
                          ("pick_seeds", 1)):
            if getattr(self, name) < low:
                raise ParameterError(f"{name} must be >= {low}, got {getattr(self, name)}", name)
        evals = self.proxy.recipe.evals or self.proxy.recipe.epochs
        if self.first_rung >= evals:
            raise ParameterError(f"first_rung must be below the recipe's {evals} evaluations, "
                                 f"got {self.first_rung}", "first_rung")

    @property
    def evals(self) -> int:
        """Evaluation points of one full training (the rungs' unit)."""
        return self.proxy.recipe.evals or self.proxy.recipe.epochs

    def rungs(self) -> list[int]:
        """The evaluations at which successive halving judges a trial (Li et al. 2018): the
        first rung, then every `eta` times further, below the last evaluation."""
        out, step = [], self.first_rung
        while step < self.evals:
            out.append(step)
            step *= self.eta
        return out

    def identity(self, target: float) -> dict[str, Any]:
        return json.loads(json.dumps({
            "kind": KIND, "base": spec_to_dict(self.space.base),
            "options": {k: list(v) for k, v in self.space.options().items()},
            "proxy": self.proxy.identity(), "target_macs": target, "w": self.w,
            "multi_objective": self.multi_objective, "seed": self.seed,
            "sampler": self.sampler, "startup": self.startup, "eta": self.eta,
            "first_rung": self.first_rung}))


@dataclass
class NasResult:
    """Every trial of the stored search and what this worker did."""

    study_name: str
    storage: str
    target_macs: float
    base_cost: Any
    rows: list[dict]
    ran_now: int
    picks: list[dict] = field(default_factory=list)

    @property
    def pick(self) -> dict | None:
        """The retrained candidate with the best mean reward (:mod:`.pick`), once all are done."""
        return picked(self.picks)

    @property
    def best(self) -> dict | None:
        """The picked trial's row (best mean over new seeds) if the pick is done; else the
        finished trial with the highest reward (ties: fewer MACs, then lower number)."""
        pick = self.pick
        if pick is not None:
            return next(r for r in self.rows if r["trial"] == pick["trial"])
        done = [r for r in self.rows if r["status"] == "complete"]
        return max(done, key=lambda r: (r["reward"], -r["macs"], -r["trial"])) if done else None

    def trainings(self) -> dict[str, float]:
        """What the search cost: trials, full trainings they stand for, pick retrainings."""
        return {"trials": len(self.rows),
                "search": float(sum(r.get("trainings") or 0.0 for r in self.rows)),
                "pick": float(sum(len(p["accuracies"]) for p in self.picks))}


# ---------------------------------------------------------------- one trial
def _objective(cfg: NasConfig, n_trials: int, data: ProxyData, trainer: Trainer, target: float,
               prune: bool, status: Callable[[str], None], ran: list[int],
               budget: float | None = None):
    """The function Study.optimize calls; `ran[0]` counts the trials this worker trained."""
    import optuna
    import torch

    shapes = (data.num_classes, data.in_chans)
    proxy = cfg.proxy

    def objective(trial):
        reason = slot_taken(trial.study.get_trials(deepcopy=False), trial.number, n_trials,
                             trial.user_attrs.get(ROLE_ATTR), budget, cfg.evals)
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
                if k < cfg.evals and trial.should_prune():
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
def _open_study(store, cfg: NasConfig, study_name: str, target: float, worker: int,
                prune: bool):
    import optuna

    directions = ["maximize", "minimize"] if cfg.multi_objective else ["maximize"]
    offset = 0
    with contextlib.suppress(KeyError), quiet_optuna():
        offset = len(optuna.load_study(study_name=study_name, storage=store).trials)
    with quiet_optuna():
        study = optuna.create_study(storage=store, study_name=study_name, directions=directions,
                                    sampler=make_sampler(cfg, worker, offset),
                                    pruner=make_pruner(cfg, prune),
                                    load_if_exists=True)
    mine = cfg.identity(target)
    if study.user_attrs.get(IDENTITY_ATTR) is None:
        if study.get_trials(deepcopy=False):
            raise ParameterError(f"study {study_name!r} was not made by `effnet nas`: pass "
                                 "another study_name or storage", "study_name", "storage")
        study.set_user_attr(IDENTITY_ATTR, mine)
        # The base (B0) is among the first trials: the report compares every trial with it.
        for choice, role in first_trials(cfg):
            study.enqueue_trial(choice, user_attrs={ROLE_ATTR: role})
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
            poll_s: float | None = None, budget: float | None = None) -> NasResult:
    """Run (or resume, or join) the baseline search until `n_trials` trials are done, or the
    trials stand for `budget` full trainings (a pruned trial counts its share, :func:`spent`).

    Returns every trial of the stored study (:func:`trial_rows`). `trainer`
    defaults to :func:`~effnet.proxy.trainer.train_proxy`, `data` to the
    proxy's dataset; `worker` (0, 1, ...) offsets the sampler's seed.
    """
    from tqdm.auto import tqdm

    if n_trials < 1:
        raise ParameterError(f"n_trials must be >= 1, got {n_trials}", "n_trials")
    if budget is not None and not budget > 0:
        raise ParameterError(f"budget must be > 0 trainings, got {budget}", "budget")
    url = storage_url(storage)
    store = open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    if data is None:
        data = ProxyData(cfg.proxy.dataset, root, cfg.proxy.recipe)
    base_cost = cfg.proxy.measure(cfg.space.base, data.num_classes, data.in_chans)
    target = float(cfg.target_macs or base_cost.macs)
    study = _open_study(store, cfg, study_name, target, worker, prune)
    counts = trial_counts(study.get_trials(deepcopy=False), cfg.evals)
    bar = tqdm(total=n_trials, initial=min(n_trials, int(counts["done"])),
               desc="baseline search", unit="trial", disable=not progress, dynamic_ncols=True)
    ran = [0]
    objective = _objective(cfg, n_trials, data, trainer or train_proxy, target, prune,
                           lambda s: bar.set_postfix_str(s, refresh=True), ran, budget)

    def next_action() -> str:
        counts = trial_counts(study.get_trials(deepcopy=False), cfg.evals)
        bar.n = min(n_trials, int(counts["done"]))
        bar.refresh()
        room = budget is None or counts["committed"] < budget
        if (counts["live"] < n_trials and room) or counts["waiting"]:
            return "run"
        # other workers (or dead ones) hold the last trials
        return "wait" if counts["running"] else "stop"

    try:
        serve(study, store, objective, next_action,
              poll=poll_s if poll_s is not None else min(float(heartbeat_interval), 5.0))
    finally:
        bar.close()
    return NasResult(study_name, url, target, base_cost, trial_rows(study, cfg.evals), ran[0])


def trial_rows(study, evals: int = 1) -> list[dict]:
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
                     "seconds": a.get("seconds"), "error": a.get("error"),
                     "trainings": spent(t, evals) if t.state == TrialState.PRUNED
                     else min(1.0, len(curve) / evals) if t.state != TrialState.COMPLETE
                     else 1.0})
    return rows


def describe_row(row: dict) -> str:
    """The compact stage description of a trial row's spec."""
    from ..spec import spec_from_dict

    with contextlib.suppress(EffnetError):
        return describe(spec_from_dict(row["spec"]))
    return "?"


def nas_worker(cfg: NasConfig, n_trials: int, storage: str, study_name: str, root: str | None,
               trainer_ref: str | None, heartbeat_interval: int, grace_period: int, worker: int,
               threads: int = 1, progress: bool = False, prune: bool = True,
               budget: float | None = None) -> int:
    """One worker process of `effnet nas --workers K`: trains trials until the search is done,
    then the pick's retrainings (:func:`~.pick.run_pick`).

    Returns the number of trials it trained.
    """
    start_worker(threads)
    trainer = load_trainer(trainer_ref)
    data = ProxyData(cfg.proxy.dataset, root, cfg.proxy.recipe)
    result = run_nas(cfg, n_trials, storage, study_name, trainer=trainer, data=data,
                     prune=prune, progress=progress, worker=worker, root=root,
                     heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                     budget=budget)
    run_pick(cfg, result.rows, storage, study_name, result.target_macs, trainer, data, root)
    return result.ran_now


def run_workers(cfg: NasConfig, n_trials: int, storage: str, study_name: str = DEFAULT_STUDY,
                workers: int = 1, root: str | None = None, trainer_ref: str | None = None,
                heartbeat_interval: int = HEARTBEAT_S, grace_period: int = GRACE_S,
                progress: bool = True, prune: bool = True, budget: float | None = None) -> None:
    """Run the search and the pick in `workers` processes (one torch thread each) sharing
    `storage`."""
    if workers < 1:
        raise ParameterError(f"workers must be >= 1, got {workers}", "workers")
    args = (cfg, n_trials, storage, study_name, root, trainer_ref, heartbeat_interval,
            grace_period)
    run_parallel(nas_worker, [(*args, i, 1, progress and i == 0, prune, budget)
                              for i in range(workers)])


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
    rows = trial_rows(study, cfg.evals)
    return NasResult(study_name, url, target, base_cost, rows, 0,
                     stored_picks(cfg, rows, store, study_name, target))
