"""How much of each step `effnet nas` and `effnet autoscale` do: their presets (no torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NasPreset:
    """One baseline search's size: its budget in full trainings and the pick's retrainings.

    A trial of the default recipe (one epoch on all the training images) took
    59-86 s on one AVX2 core of the 2-core development box (B0's proxy 86 s),
    so a search costs about (budget + top_k x pick_seeds) x 70 s / workers.
    """

    name: str
    budget: float
    top_k: int
    pick_seeds: int
    max_trials: int
    startup: int = 12


NAS_PRESETS = {
    # 6 + 2 x 3 = 12 trainings: some 7 min with 2 workers on free cores. About 10 trials:
    # evolution's population of 6 is random, a few mutations follow.
    "quick": NasPreset("quick", budget=6, top_k=2, pick_seeds=3, max_trials=40, startup=6),
    # 30 + 3 x 3 = 39 trainings: some 25 min with 2 workers on free cores (about 55 trials).
    "standard": NasPreset("standard", budget=30, top_k=3, pick_seeds=3, max_trials=150),
}


@dataclass(frozen=True)
class AutoscalePreset:
    """How much of each step one `effnet autoscale` run does."""

    name: str
    nas: NasPreset
    grid_step: float
    grid_tolerance: float
    grid_max: float | None
    grid_seeds: int
    family_seeds: int


PRESETS = {
    # A short search, a coarse grid, one seed (measured times: results/autoscale-quick).
    "quick": AutoscalePreset("quick", nas=NAS_PRESETS["quick"], grid_step=0.1,
                             grid_tolerance=0.1, grid_max=1.4, grid_seeds=1, family_seeds=1),
    # A finer grid (0.05; the paper publishes no spacing), more trials and seeds for intervals.
    "standard": AutoscalePreset("standard", nas=NAS_PRESETS["standard"], grid_step=0.05,
                                grid_tolerance=0.1, grid_max=None, grid_seeds=2,
                                family_seeds=3),
}
