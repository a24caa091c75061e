"""Which trials of a baseline search run, and how they are drawn and judged.

* trial slots: a search of N trials or B trainings runs the first live trials that fit
  (:func:`slot_taken`), whichever worker asks; a trial stopped at a rung counts its share
  of a training (:func:`spent`);
* the sampler (regularized evolution, TPE, random or NSGA-II), the pruner (successive
  halving) and the trials a new study starts with (:func:`first_trials`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..proxy.queue import SKIP_ATTR
from ..proxy.workers import quiet_optuna

if TYPE_CHECKING:
    from .search import NasConfig

ROLE_ATTR = "role"             # trial user attr: "baseline" for the enqueued base


def live(t) -> bool:
    """Whether a trial holds a slot: not skipped, and done, running or waiting."""
    from optuna.trial import TrialState

    return SKIP_ATTR not in t.user_attrs and t.state in (
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def spent(t, evals: int) -> float:
    """Full trainings a live trial stands for: its share of the evaluations if it was pruned,
    1 if it finished or may still run to the end (running or waiting)."""
    from optuna.trial import TrialState

    if t.state == TrialState.PRUNED:
        return min(1.0, len(t.user_attrs.get("curve") or []) / evals)
    return 1.0


def slot_taken(trials, number: int, n_trials: int, role: str | None,
               budget: float | None = None, evals: int = 1) -> str | None:
    """Why trial `number` must run nothing, or None.

    A search of N trials runs the first N live trials by number, and with a
    budget of B trainings only while the live trials before it stand for
    fewer than B (:func:`spent`): any worker decides alike, so a search does
    the same work whatever the number of workers. A failed trial frees its
    slot (a retry of a dead worker's trial is a new, live one). An enqueued
    trial (the baseline, a start-up point) runs once even if two new workers
    both enqueued it.
    """
    before = [t for t in trials if t.number < number and live(t)]
    if role is not None and any(t.user_attrs.get(ROLE_ATTR) == role for t in before):
        return f"duplicate {role}"
    if len(before) >= n_trials:
        return "no trial left"
    if budget is not None and sum(spent(t, evals) for t in before) >= budget:
        return "budget spent"
    return None


def trial_counts(trials, evals: int = 1) -> dict[str, float]:
    """How many live trials wait, run and are done, and the trainings they stand for."""
    from optuna.trial import TrialState

    alive = [t for t in trials if live(t)]
    return {"live": len(alive),
            "waiting": sum(t.state == TrialState.WAITING for t in alive),
            "running": sum(t.state == TrialState.RUNNING for t in alive),
            "done": sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in alive),
            "committed": sum(spent(t, evals) for t in alive)}


# ---------------------------------------------------------------- the strategy
def make_sampler(cfg: NasConfig, worker: int, offset: int = 0):
    """The config's sampler, seeded from its seed, the worker's index and `offset`.

    Workers sharing a study must not draw the same points: `run_workers` gives
    each its index, and `offset` (the trials already stored when a worker
    joins) separates a rerun and later joiners from the first run. TPE gets
    `startup` random trials first: with 35 parameters, 8 start-up trials of
    16 left it no room to be more than random search (issue 19).
    """
    import optuna

    from .evolution import RegularizedEvolutionSampler

    seed = cfg.seed + 1000 * worker + offset
    if cfg.multi_objective:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler == "evolution":  # tournament of a quarter of the population, as Real et al.
        return RegularizedEvolutionSampler(cfg.startup, max(2, round(cfg.startup / 4)), seed)
    with quiet_optuna():  # constant_liar (parallel workers avoid each other) is experimental
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup,
                                          constant_liar=True, multivariate=True, group=False)


def make_pruner(cfg: NasConfig, prune: bool):
    """Successive halving (asynchronous, Li et al. 2020) over the recipe's evaluations.

    A trial reaching rung r (evaluation first_rung * eta^r) goes on only if
    its reward is in the best 1/eta of all rewards recorded at that rung so
    far; the very first trial at a rung has no competitor and goes on, which
    is why the study starts with `eta` random trials before B0 (B0 gets no
    pass). Optuna does not prune multi-objective trials.
    """
    import optuna

    if not prune or cfg.multi_objective:
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg.first_rung,
                                                  reduction_factor=cfg.eta)


def first_trials(cfg: NasConfig) -> list[tuple[dict[str, Any], str]]:
    """(choice, role) of the trials a new study is seeded with, in order.

    Single objective: `eta` random choices (seeded by the config's seed), then
    the base (B0), so that successive halving judges B0 against as many
    trials as any later one. Multi-objective: the base first.
    """
    import random

    if cfg.multi_objective:
        return [(cfg.space.baseline_choice(), "baseline")]
    rng = random.Random(f"effnet-nas-startup-{cfg.seed}")
    return [*((cfg.space.sample(rng), f"startup-{i}") for i in range(cfg.eta)),
            (cfg.space.baseline_choice(), "baseline")]


