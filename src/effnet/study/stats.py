"""The study's statistics: verdicts with confidence intervals, rank agreement, flat curves.

A difference between two models is a verdict only with its uncertainty: the
difference of mean validation top-1 over seeds, with a 95% confidence
interval from Welch's t-test (unequal variances, Welch-Satterthwaite degrees
of freedom); *win* when the whole interval lies above zero, *loss* when it
lies below, *tie* otherwise (not significant at that level).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

STILL_LEARNING = 0.005
"""A run whose validation top-1 rose by more than this (0.5 point) over its last quarter."""


@dataclass(frozen=True)
class Comparison:
    """Model a against model b over seeds: mean difference a - b, its 95% interval, a verdict."""

    diff: float
    ci_low: float
    ci_high: float
    verdict: str          # win | loss | tie (a against b)
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return asdict(self)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95
                   ) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): Welch's confidence interval for the difference of means.

    Needs at least two values on each side. When both sides have zero spread
    the interval is the difference itself.
    """
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's interval needs at least two seeds on each side")
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff, se2 = ma - mb, va + vb
    if se2 == 0:
        return diff, diff, diff
    dof = se2**2 / ((va**2 / (len(a) - 1)) + (vb**2 / (len(b) - 1)))
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * math.sqrt(se2)
    return diff, diff - half, diff + half


def compare(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Comparison:
    """Compare the seed scores of model a with model b: a :class:`Comparison`."""
    diff, low, high = welch_interval(a, b, level)
    verdict = "win" if low > 0 else "loss" if high < 0 else "tie"
    return Comparison(diff, low, high, verdict, len(a), len(b))


def kendall_tau(x: Mapping[str, float], y: Mapping[str, float]) -> float | None:
    """Kendall's tau-b between two scorings of the same models (over the keys both have).

    None when fewer than two models are shared or a side has no spread.
    """
    from scipy import stats

    keys = sorted(set(x) & set(y))
    if len(keys) < 2:
        return None
    tau = stats.kendalltau([x[k] for k in keys], [y[k] for k in keys]).statistic
    return None if math.isnan(tau) else float(tau)


def last_quarter_gain(curve: Sequence[float]) -> float:
    """How much a validation curve rose over the last quarter of its evaluation points."""
    if len(curve) < 2:
        return 0.0
    back = max(1, round(len(curve) / 4))
    return curve[-1] - curve[-1 - back]


def mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """The pointwise mean of equally long curves (one per seed)."""
    if not curves:
        return []
    n = min(len(c) for c in curves)
    return [statistics.fmean(c[i] for c in curves) for i in range(n)]
