"""The study of the paper's method: its grid search on the study's own base, then a sweep of
directions that split the cost between depth, width and resolution.

A *direction* says which share of the log-MACs each dimension takes: at a
MAC multiple T the base is scaled by d = T^depth, w = T^(width / 2),
r = T^(resolution / 2) (paper Eq. 3: FLOPs grow as d * w^2 * r^2), so the
shares sum to 1. Compound scaling with coefficients (alpha, beta, gamma) is
the direction with shares proportional to (ln alpha, 2 ln beta, 2 ln gamma);
the three single dimensions are the corners.

Step 1 of the method (Sec. 3.3) is the grid search at phi = 1: every
(alpha, beta, gamma) >= 1 on a stated spacing with alpha * beta^2 * gamma^2
near 2, built on the base, duplicates (networks that round to the same
channels, blocks and pixels) dropped, each trained with several seeds; the
winner by mean validation score gives the *searched* direction. Step 2
scales the base along it; the sweep puts it beside the corners, the paper's
ImageNet coefficients, another base's searched coefficients, and points in
between, each matched to the same measured MACs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..proxy.candidates import Cost, Scaled
from ..search.grid import GridPoint, enumerate_grid
from .plan import CostCache, Run
from .presets import Preset

CORNERS = {"depth": (1.0, 0.0, 0.0), "width": (0.0, 1.0, 0.0), "resolution": (0.0, 0.0, 1.0)}


@dataclass(frozen=True)
class Direction:
    """Shares of the log-MACs that depth, width and resolution take (they sum to 1)."""

    name: str
    depth: float
    width: float
    resolution: float

    def __post_init__(self) -> None:
        shares = (self.depth, self.width, self.resolution)
        if min(shares) < 0 or not math.isclose(sum(shares), 1.0, abs_tol=1e-9):
            raise ValueError(f"direction {self.name!r}: shares must be >= 0 and sum to 1, "
                             f"got {shares}")

    @classmethod
    def of_coefficients(cls, name: str, alpha: float, beta: float, gamma: float) -> Direction:
        """The direction compound scaling with (alpha, beta, gamma) moves along (Eq. 3)."""
        logs = (math.log(alpha), 2 * math.log(beta), 2 * math.log(gamma))
        if min(logs) < 0 or sum(logs) <= 0:
            raise ValueError(f"coefficients must be >= 1 and not all 1, got "
                             f"{(alpha, beta, gamma)}")
        total = sum(logs)
        return cls(name, logs[0] / total, logs[1] / total, 1.0 - (logs[0] + logs[1]) / total)

    @property
    def shares(self) -> tuple[float, float, float]:
        return (self.depth, self.width, self.resolution)

    def multipliers(self, log_macs: float) -> tuple[float, float, float]:
        """(d, w, r) for a nominal MAC multiple e^log_macs."""
        return (math.exp(self.depth * log_macs), math.exp(self.width * log_macs / 2),
                math.exp(self.resolution * log_macs / 2))


def corner(name: str) -> Direction:
    """A single dimension as a direction."""
    return Direction(name, *CORNERS[name])


def simplex_points(n: int) -> list[Direction]:
    """The interior points of the share triangle on a grid of 1/n (n >= 3): splits between
    the corners, named by their shares."""
    out = []
    for i in range(1, n):
        for j in range(1, n - i):
            k = n - i - j
            out.append(Direction(f"split-{i}{j}{k}of{n}", i / n, j / n, k / n))
    return out


def scaled_along(base: Scaled, direction: Direction, log_macs: float) -> Scaled:
    """`base` scaled along `direction` to the nominal MAC multiple e^log_macs."""
    d, w, r = direction.multipliers(log_macs)
    return replace(base, width_mult=base.width_mult * w, depth_mult=base.depth_mult * d,
                   resolution=max(8, round(base.resolution * r)))


def match_along(base: Scaled, direction: Direction, target_macs: float,
                cost: Callable[[Scaled], Cost], steps: int = 14) -> tuple[float, Scaled]:
    """The log-MAC multiplier along `direction` whose *measured* MACs come closest to the
    target (in log scale): bisection on the first one reaching it, then the nearer of it and
    the last one below."""
    lo, hi = 0.0, math.log(2.0)
    while cost(scaled_along(base, direction, hi)).macs < target_macs:
        lo, hi = hi, hi + math.log(2.0)
        if hi > math.log(64.0):
            raise ValueError(f"direction {direction.name} cannot reach {target_macs:.3g} MACs")
    for _ in range(steps):
        mid = (lo + hi) / 2
        if cost(scaled_along(base, direction, mid)).macs >= target_macs:
            hi = mid
        else:
            lo = mid
    cands = [(t, scaled_along(base, direction, t)) for t in (lo, hi)]
    return min(cands, key=lambda c: abs(math.log(max(1, cost(c[1]).macs) / target_macs)))


def grid_runs(group: str, base: Scaled, cost: Callable[[Scaled], Cost], step: float,
              tolerance: float) -> list[Run]:
    """Step 1 on `base`: one run per distinct network of the grid at phi = 1.

    Points are taken in the grid's order; a point whose network (channels,
    blocks, strides, pixels) equals an earlier one's is dropped, since
    training it again measures only seeds.
    """
    base_macs = cost(base).macs
    seen: set[tuple] = set()
    out = []
    for p in enumerate_grid(step, 2.0, tolerance):
        s = replace(base, width_mult=base.width_mult * p.beta,
                    depth_mult=base.depth_mult * p.alpha,
                    resolution=round(base.resolution * p.gamma))
        key = CostCache.network(s)
        if key in seen:
            continue
        seen.add(key)
        out.append(Run(group, f"grid-{p.label}", 2.0, 1.0, s, cost(s), base_macs))
    return out


def grid_point(run: Run) -> GridPoint:
    """The (alpha, beta, gamma) of a grid run, from its name."""
    a, b, g = (float(x[1:]) for x in run.strategy.removeprefix("grid-").split("_"))
    return GridPoint(a, b, g)


def law(run: Run, base: Scaled) -> dict[str, float]:
    """How a model realises its nominal scaling: blocks, channels and pixels over the base's,
    beside the multipliers asked for, and its measured MACs beside the law d * w^2 * r^2.

    Channels are the mean over stages of each stage's ratio; `macs_vs_law` is
    measured MACs over the base's, divided by d * w^2 * r^2 of the realised
    ratios (1 when the proxy keeps the law exactly).
    """
    s, b = run.scaled.spec(), base.spec()
    blocks = s.num_blocks / b.num_blocks
    chans = sum(x.out_channels / y.out_channels for x, y in zip(s.stages, b.stages,
                                                                 strict=True)) / len(s.stages)
    pixels = run.scaled.resolution / base.resolution
    macs = run.cost.macs / run.base_macs
    return {"depth_asked": run.scaled.depth_mult / base.depth_mult,
            "width_asked": run.scaled.width_mult / base.width_mult,
            "blocks": blocks, "channels": chans, "pixels": pixels, "macs": macs,
            "macs_vs_law": macs / (blocks * chans**2 * pixels**2)}


def plan_grid(preset: Preset, cost: Callable[[Scaled], Cost]) -> list[Run]:
    """Step 1 for every base of a `method` preset: its distinct grid networks at phi = 1."""
    out = []
    for base in preset.bases:
        out += grid_runs(base.key, base.start(preset.image_size), cost, preset.grid_step,
                         preset.grid_tolerance)
    return out


def searched_coefficients(grid: list[Run], scores: dict[str, list[float]]
                          ) -> dict[str, GridPoint]:
    """Per base, the grid point with the highest mean score over its seeds (`scores` by run
    key); bases without a scored point are left out."""
    best: dict[str, tuple[float, Run]] = {}
    for r in grid:
        if scores.get(r.key):
            mean = sum(scores[r.key]) / len(scores[r.key])
            if r.group not in best or mean > best[r.group][0]:
                best[r.group] = (mean, r)
    return {g: grid_point(r) for g, (_, r) in best.items()}


def directions(preset: Preset, base: str, searched: dict[str, GridPoint]) -> list[Direction]:
    """The directions one base is scaled along: the corners, the preset's coefficients
    ("compound"), its own searched ones, the first base's searched ones (for the other bases)
    and the interior sweep points."""
    out = [corner(n) for n in CORNERS]
    out.append(Direction.of_coefficients("compound", *preset.coefficients))
    if base in searched:
        p = searched[base]
        out.append(Direction.of_coefficients("searched", p.alpha, p.beta, p.gamma))
    first = preset.bases[0].key
    if base != first and first in searched:
        p = searched[first]
        out.append(Direction.of_coefficients(f"searched-{first}", p.alpha, p.beta, p.gamma))
    return out + (simplex_points(preset.sweep) if preset.sweep else [])


def plan_method(preset: Preset, cost: Callable[[Scaled], Cost],
                searched: dict[str, GridPoint]) -> list[Run]:
    """Step 2 and the sweep: every base, and every direction at every target, each matched
    to the target's *measured* MACs (target x the base's)."""
    runs = []
    for base in preset.bases:
        b = base.start(preset.image_size)
        bc = cost(b)
        runs.append(Run(base.key, "baseline", 1.0, 0.0, b, bc, bc.macs))
        for target in preset.targets:
            for d in directions(preset, base.key, searched):
                t, s = match_along(b, d, target * bc.macs, cost)
                runs.append(Run(base.key, d.name, target, t, s, cost(s), bc.macs))
    return runs


def run_seeds(preset: Preset, run: Run) -> tuple[int, ...]:
    """The seeds one run is trained with: `grid_seeds` for grid points, `sweep_seeds` for the
    interior sweep points, the preset's seeds for the rest (the primary comparisons)."""
    n = (preset.grid_seeds if run.strategy.startswith("grid-") else
         preset.sweep_seeds if run.strategy.startswith("split-") else preset.seeds)
    return tuple(range(preset.first_seed, preset.first_seed + n))


LR_SEED = 999
"""Offset of the seed the learning-rate sweep trains with (first_seed + LR_SEED): not one of
the seeds the models are compared on, so the choice does not select their luck."""


def lr_swept(run: Run) -> bool:
    """Whether a run gets its own learning rate: the base, corners and compound models (the
    primary comparisons and the borrowed coefficients); grid and interior sweep points keep the
    recipe's."""
    return not run.strategy.startswith(("grid-", "split-"))


def lr_jobs(preset: Preset, runs: list[Run]) -> dict[str, dict]:
    """The learning-rate sweep: every swept run at each multiplier of `preset.lr_sweep`, one
    seed of its own, the first budget."""
    b = preset.budgets[0]
    seed = preset.first_seed + LR_SEED
    jobs = {}
    for r in runs:
        if not lr_swept(r):
            continue
        for m in preset.lr_sweep:
            recipe = b.recipe.as_dict()
            recipe["lr"] *= m
            jobs[f"lr{m:g}/{r.key}/{seed}"] = {"run": r.as_dict(), "seed": seed,
                                               "recipe": recipe, "weights": None}
    return jobs


def pick_lr(preset: Preset, runs: list[Run], results: dict[str, dict]) -> dict[str, float]:
    """Per swept run, the multiplier with the best validation top-1 (ties: the one closest
    to 1, then the smaller)."""
    seed = preset.first_seed + LR_SEED
    out = {}
    for r in runs:
        scored = [(results[k]["val_top1"], -abs(math.log(m)), -m, m)
                  for m in preset.lr_sweep if (k := f"lr{m:g}/{r.key}/{seed}") in results]
        if lr_swept(r) and scored:
            out[r.key] = max(scored)[3]
    return out
