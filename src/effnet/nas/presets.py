"""How much of each step one `effnet autoscale` run does: its presets (no torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AutoscalePreset:
    """How much of each step one `effnet autoscale` run does."""

    name: str
    nas_trials: int
    grid_step: float
    grid_tolerance: float
    grid_max: float | None
    grid_seeds: int
    family_seeds: int


PRESETS = {
    # A short search, a coarse grid, one seed (measured times: results/autoscale-quick).
    "quick": AutoscalePreset("quick", nas_trials=10, grid_step=0.1, grid_tolerance=0.1,
                             grid_max=1.4, grid_seeds=1, family_seeds=1),
    # A finer grid (0.05; the paper publishes no spacing), more trials and seeds for intervals.
    "standard": AutoscalePreset("standard", nas_trials=40, grid_step=0.05, grid_tolerance=0.1,
                                grid_max=None, grid_seeds=2, family_seeds=3),
}
