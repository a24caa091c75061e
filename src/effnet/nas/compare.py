"""How a baseline search is judged (issue 19): noise per trial, early-vs-final ranks, two searches.

* :func:`seed_spread`: the SD between seeds of one architecture against the SD between
  architectures' means; a proxy ranks architectures only if the first is well below the second;
* :func:`rung_taus`: Kendall's tau between the scores at each evaluation and the final
  ones over trials trained to the end; successive halving is only as good as this
  agreement at its rungs (Li et al. 2018);
* :func:`compare_searches`: one search against another (random search) over search
  seeds, each seed's value the mean of its pick's retrainings (Welch's interval over the
  search seeds: the search run is the unit, not the training).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from ..study.stats import Comparison, compare, kendall_tau


def seed_spread(scores: Mapping[str, Sequence[float]]) -> dict[str, float | int | None]:
    """Seed SD (pooled within-architecture) against the SD between architectures' means.

    `scores` maps each architecture to its scores over seeds (2 or more; others are left
    out). `between_sd` is the SD of the means; `between_sd_true` removes the part the
    seeds put in the means (var(means) - seed_var / n, floored at 0): the spread a
    noise-free proxy would show.
    """
    groups = {k: list(v) for k, v in scores.items() if len(v) >= 2}
    if len(groups) < 2:
        return {"architectures": len(groups), "seed_sd": None, "between_sd": None,
                "between_sd_true": None}
    seed_var = statistics.fmean(statistics.variance(v) for v in groups.values())
    means = [statistics.fmean(v) for v in groups.values()]
    n = statistics.fmean(len(v) for v in groups.values())
    between_var = statistics.variance(means)
    return {"architectures": len(groups), "seed_sd": math.sqrt(seed_var),
            "between_sd": math.sqrt(between_var),
            "between_sd_true": math.sqrt(max(0.0, between_var - seed_var / n))}


def rung_taus(curves: Mapping[str, Sequence[float]]) -> list[float | None]:
    """Kendall's tau between the score at evaluation k and the last, for k = 1 .. E-1.

    `curves` maps each trial to its whole curve (trials trained to the end); curves of
    another length than the longest are left out.
    """
    full = max((len(c) for c in curves.values()), default=0)
    kept = {k: list(c) for k, c in curves.items() if len(c) == full}
    final = {k: c[-1] for k, c in kept.items()}
    return [kendall_tau({k: c[i] for k, c in kept.items()}, final) for i in range(full - 1)]


def compare_searches(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Search a against search b: each value one search seed's pick, as the mean of its
    retrainings; Welch's 95% interval over the search seeds and a verdict (win / loss / tie)."""
    return compare(list(a), list(b))


__all__ = ["Comparison", "compare_searches", "rung_taus", "seed_spread"]
