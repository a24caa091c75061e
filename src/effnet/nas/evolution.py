"""Regularized (aging) evolution as an Optuna sampler, for the categorical space of :mod:`.space`.

Real et al. (2019) keep a population of the last P trained models; each new
model is a copy of the best of S members drawn at random (a tournament) with
one choice mutated, and the oldest member leaves as the child joins, so a
lucky score cannot stay forever (the "regularization"). On NAS-Bench-101 it
beat random search and reinforcement learning at equal numbers of trainings,
and White et al. (2021) found evolution and local search strong at small
budgets where model-based samplers such as BOHB were not. The first P trials
are random (the initial population).

Multi-fidelity: a trial stopped at an earlier rung ranks below one that went
further, and trials of the same rung rank by the value reported there (as
Optuna's TPE ranks pruned trials).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from ..errors import ParameterError
from ..proxy.queue import SKIP_ATTR


def fitness(trial: FrozenTrial) -> tuple[int, float]:
    """(evaluations reached, score there): how a trial ranks in a tournament (higher is better).

    A finished trial's own value counts at its last step; a pruned one's, its last reported value.
    """
    steps = trial.intermediate_values
    last = max(steps) if steps else 0
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return (last + 1 if steps else 1, float(trial.value))
    return (last, float(steps[last])) if steps else (0, float("-inf"))


def finished(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that trained and ended (complete or pruned), by number; skipped slots left out."""
    return sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   and SKIP_ATTR not in t.user_attrs and t.params),
                  key=lambda t: t.number)


class RegularizedEvolutionSampler(optuna.samplers.BaseSampler):
    """Aging evolution (Real et al. 2019): tournament of `sample_size` out of the last
    `population` finished trials, the winner's choice with one parameter mutated."""

    def __init__(self, population: int = 12, sample_size: int = 3,
                 seed: int | None = None) -> None:
        if population < 2 or not 1 <= sample_size <= population:
            raise ParameterError(f"evolution needs population >= 2 and 1 <= sample_size <= "
                                 f"population, got {population} and {sample_size}",
                                 "population", "sample_size")
        self.population, self.sample_size = population, sample_size
        self._rng = random.Random(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        done = finished(study.get_trials(deepcopy=False))
        if len(done) < self.population:
            return {}  # the initial population is random
        return {k: d for k, d in done[-1].distributions.items()
                if isinstance(d, CategoricalDistribution)}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        members = finished(study.get_trials(deepcopy=False))[-self.population:]
        parent = max(self._rng.sample(members, self.sample_size), key=fitness)
        return mutate(parent.params, search_space, self._rng)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)


def mutate(params: dict[str, Any], space: dict[str, BaseDistribution],
           rng: random.Random) -> dict[str, Any]:
    """`params` restricted to `space` with one parameter (of those with a choice) set to another
    of its options."""
    child = {k: params[k] for k in space if k in params}
    free = [k for k, d in space.items()
            if isinstance(d, CategoricalDistribution) and len(d.choices) > 1 and k in child]
    if free:
        name = rng.choice(free)
        dist = space[name]
        assert isinstance(dist, CategoricalDistribution)
        child[name] = rng.choice([c for c in dist.choices if c != child[name]])
    return child
