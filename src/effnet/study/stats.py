"""The study's statistics: verdicts with confidence intervals, rank agreement, flat curves.

A difference between two models is a verdict only with its uncertainty: the
difference of mean validation top-1 over seeds, with a 95% confidence
interval from Welch's t-test (unequal variances, Welch-Satterthwaite degrees
of freedom); *win* when the whole interval lies above zero, *loss* when it
lies below, *tie* otherwise (not significant at that level).

A family of comparisons named before the run (the study's primary ones) is
corrected for their number with Holm's step-down procedure
(:func:`holm_compare`); a rank agreement comes with a seed-bootstrap
interval (:func:`bootstrap_tau`).
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
    p: float | None = None          # Welch's two-sided p-value (Holm-adjusted in a family)
    level: float | None = None      # the interval's confidence level

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


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch's two-sided p-value for mean(a) == mean(b) (1 or 0 when neither side varies)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs at least two seeds on each side")
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def compare(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Comparison:
    """Compare the seed scores of model a with model b: a :class:`Comparison`."""
    diff, low, high = welch_interval(a, b, level)
    verdict = "win" if low > 0 else "loss" if high < 0 else "tie"
    return Comparison(diff, low, high, verdict, len(a), len(b), welch_p(a, b), level)


def holm_compare(pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
                 alpha: float = 0.05) -> list[Comparison]:
    """Each (a, b) compared as in :func:`compare`, corrected for the family's size (Holm 1979).

    Step-down: the p-values sorted ascending, the i-th (from 0) of m is
    tested at alpha / (m - i) until one fails; that one and all after it are
    ties. Each comparison's interval has the confidence level it was tested
    at (the failing step's level for those after it), so an interval excludes
    zero exactly when its verdict is a win or a loss. `p` is Holm's adjusted
    p-value.
    """
    m = len(pairs)
    raw = [welch_p(a, b) for a, b in pairs]
    order = sorted(range(m), key=lambda i: raw[i])
    out: list[Comparison | None] = [None] * m
    adjusted, step, failed = 0.0, 0, False
    for rank, i in enumerate(order):
        adjusted = max(adjusted, min(1.0, (m - rank) * raw[i]))
        if not failed:
            step = rank
            failed = raw[i] >= alpha / (m - rank)
        a, b = pairs[i]
        level = 1 - alpha / (m - step)
        diff, low, high = welch_interval(a, b, level)
        verdict = "tie" if failed else "win" if diff > 0 else "loss"
        out[i] = Comparison(diff, low, high, verdict, len(a), len(b), adjusted, level)
    return [c for c in out if c is not None]


def bootstrap_tau(x: Mapping[str, Sequence[float]], y: Mapping[str, Sequence[float]],
                  samples: int = 2000, level: float = 0.95, seed: int = 0
                  ) -> tuple[float, float] | None:
    """A percentile interval for Kendall's tau between two runs' rankings of the same models.

    Each model's seed scores are resampled with replacement in both runs
    (the runs' seeds are independent), the means ranked, tau recomputed.
    None when fewer than two models are shared.
    """
    import numpy as np
    from scipy import stats

    keys = sorted(set(x) & set(y))
    if len(keys) < 2:
        return None
    rng = np.random.default_rng(seed)
    xs = [np.asarray(x[k], float) for k in keys]
    ys = [np.asarray(y[k], float) for k in keys]
    taus = []
    for _ in range(samples):
        mx = [v[rng.integers(0, len(v), len(v))].mean() for v in xs]
        my = [v[rng.integers(0, len(v), len(v))].mean() for v in ys]
        t = stats.kendalltau(mx, my).statistic
        if not math.isnan(t):
            taus.append(t)
    if not taus:
        return None
    lo, hi = np.quantile(taus, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


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
