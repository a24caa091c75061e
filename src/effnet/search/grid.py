"""The alpha/beta/gamma grid of compound scaling's step 1 (paper Sec. 3.3, Eq. 3).

Pure Python, no torch: the grid is data, like the specs. Each point is a
candidate (alpha, beta, gamma) with alpha, beta, gamma >= 1 and
alpha * beta^2 * gamma^2 within `tolerance` of `target` (2 in the paper, so
that FLOPs about double at phi = 1). The paper publishes neither its grid
step nor its range; the default step here is 0.05.

The constraint is evaluated in exact rational arithmetic, so a point on the
boundary of the tolerance band is decided the same way on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ..errors import ParameterError
from ..scaling import flops_constraint


@dataclass(frozen=True, order=True)
class GridPoint:
    """One candidate of the grid search: depth, width and resolution bases (Eq. 3)."""

    alpha: float
    beta: float
    gamma: float

    @property
    def constraint(self) -> float:
        """alpha * beta^2 * gamma^2: how much FLOPs grow per unit of phi."""
        return flops_constraint(self.alpha, self.beta, self.gamma)

    @property
    def label(self) -> str:
        """A short stable name, e.g. 'a1.20_b1.10_g1.15'."""
        return f"a{self.alpha:.2f}_b{self.beta:.2f}_g{self.gamma:.2f}"

    def as_dict(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
                "constraint": round(self.constraint, 6)}


def _exact(value: float | str, name: str) -> Fraction:
    try:
        out = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(float(out)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _axis(step: float, target: float, tolerance: float,
          max_value: float | None) -> tuple[list[Fraction], Fraction, Fraction]:
    """Every axis's values 1, 1+step, ... up to target + tolerance (and max_value), exact, with
    the exact target and tolerance."""
    step_q, target_q, tol_q = (_exact(step, "step"), _exact(target, "target"),
                               _exact(tolerance, "tolerance"))
    if step_q <= 0:
        raise ValueError(f"grid step must be > 0, got {step}")
    if target_q < 1:
        raise ValueError(f"target must be >= 1 (alpha, beta, gamma >= 1), got {target}")
    if tol_q < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    upper = target_q + tol_q
    if max_value is not None:
        cap = _exact(max_value, "max_value")
        if cap < 1:
            raise ValueError(f"max_value must be >= 1, got {max_value}")
        upper = min(upper, cap)
    n_max = int((upper - 1) / step_q)
    if n_max > 10_000:
        raise ParameterError(f"grid step {step} is too fine for this range ({n_max + 1} values "
                             "per axis): use a larger grid_step", "grid_step")
    return [1 + k * step_q for k in range(n_max + 1)], target_q, tol_q


def enumerate_grid(step: float = 0.05, target: float = 2.0, tolerance: float = 0.1,
                   max_value: float | None = None) -> list[GridPoint]:
    """All (alpha, beta, gamma) on the grid 1, 1+step, 1+2*step, ... that satisfy Eq. 3.

    A point is kept when alpha, beta, gamma >= 1 and
    |alpha * beta^2 * gamma^2 - target| <= tolerance. Since every factor is
    >= 1, alpha <= target + tolerance and beta, gamma <= sqrt(target +
    tolerance), so the grid is finite; `max_value` caps every coefficient
    further. Points come sorted by (alpha, beta, gamma).
    """
    values, target_q, tol_q = _axis(step, target, tolerance, max_value)
    points = []
    for a in values:
        for b in values:
            if a * b * b > target_q + tol_q:
                break
            for g in values:
                c = a * b * b * g * g
                if c > target_q + tol_q:
                    break
                if abs(c - target_q) <= tol_q:
                    points.append(GridPoint(float(a), float(b), float(g)))
    return points
