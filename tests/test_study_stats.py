"""The study's corrected statistics (issue 18): Holm's step-down family, a bootstrap interval on
Kendall's tau, and seeds of the quick preset disjoint from the reference's."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from scipy import stats as sps

from effnet.study.plan import Run
from effnet.study.presets import PRESETS
from effnet.study.run import study_jobs
from effnet.study.stats import bootstrap_tau, compare, holm_compare


def _welch_p(a, b) -> float:
    return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


# Three pairs: a clear difference (p ~ 1e-5), a borderline one (p between 0.025 and 0.05:
# significant alone, not after Holm's second step at alpha / 2), and none at all.
CLEAR = ([0.90, 0.901, 0.899, 0.9005], [0.80, 0.801, 0.799, 0.8005])
BORDER = ([0.82, 0.86, 0.84, 0.85, 0.83], [0.795, 0.835, 0.812, 0.827, 0.806])
NONE = ([0.80, 0.84, 0.82], [0.81, 0.83, 0.825])


def test_the_borderline_pair_is_significant_alone_and_between_holms_steps():
    p = _welch_p(*BORDER)
    assert 0.05 / 2 < p < 0.05           # what makes the example discriminating
    assert compare(*BORDER).verdict == "win"


def test_holm_adjusts_p_values_by_the_step_down_rule():
    pairs = [BORDER, NONE, CLEAR]
    raw = [_welch_p(*p) for p in pairs]
    out = holm_compare(pairs)
    # Sorted ascending: CLEAR (x3), BORDER (x2), NONE (x1); adjusted p is the running maximum.
    clear, border = min(1, 3 * raw[2]), min(1, 2 * raw[0])
    none = min(1, raw[1])
    assert out[2].p == pytest.approx(clear)
    assert out[0].p == pytest.approx(max(clear, border))
    assert out[1].p == pytest.approx(max(clear, border, none))
    assert [c.verdict for c in out] == ["tie", "tie", "win"]   # BORDER no longer a win


def test_holm_intervals_exclude_zero_exactly_for_wins_and_losses():
    worse = (CLEAR[1], CLEAR[0])
    out = holm_compare([CLEAR, worse, BORDER, NONE])
    assert [c.verdict for c in out[:2]] == ["win", "loss"]
    for c in out:
        assert (c.ci_low > 0 or c.ci_high < 0) == (c.verdict != "tie")
        assert c.level >= 0.95
    # The most significant comparison is tested at alpha / m, its interval at 1 - 0.05 / 4.
    assert max(c.level for c in out) == pytest.approx(1 - 0.05 / 4)
    ref = sps.ttest_ind(*CLEAR, equal_var=False).confidence_interval(out[0].level)
    assert (out[0].ci_low, out[0].ci_high) == pytest.approx((ref.low, ref.high))


def test_a_family_of_one_is_the_plain_comparison():
    (c,) = holm_compare([BORDER])
    plain = compare(*BORDER)
    assert (c.verdict, c.ci_low, c.ci_high) == (plain.verdict, plain.ci_low, plain.ci_high)
    assert c.p == pytest.approx(_welch_p(*BORDER))


def test_bootstrap_tau_interval_where_the_answer_is_known():
    means = (0.5, 0.6, 0.7, 0.8, 0.9)
    apart = {k: [v, v + 0.001, v - 0.001] for k, v in zip("abcde", means, strict=True)}
    same = {k: [x + 0.0005 for x in v] for k, v in apart.items()}
    assert bootstrap_tau(apart, same) == pytest.approx((1.0, 1.0))  # never flips
    rev = {k: apart[j] for k, j in zip("abcde", "edcba", strict=True)}
    assert bootstrap_tau(apart, rev) == pytest.approx((-1.0, -1.0))
    # Equal means with a large seed spread: the order is noise, the interval spans zero widely.
    noisy = {k: [0.7, 0.8, 0.9] for k in "abcdef"}
    lo, hi = bootstrap_tau(noisy, noisy, samples=500)
    assert lo < -0.3 and hi > 0.3
    assert bootstrap_tau({"a": [1.0]}, {"a": [1.0]}) is None


def test_the_quick_presets_seeds_are_not_the_references():
    ref = json.loads(resources.files("effnet.study").joinpath("reference_standard.json")
                     .read_text())
    first = ref["preset"].get("first_seed", 0)
    ref_seeds = set(range(first, first + ref["seeds"]))
    quick = PRESETS["quick"]
    assert len(quick.seed_list) == quick.seeds >= 3
    assert not ref_seeds & set(quick.seed_list)
    # ... and the jobs it trains use them (the seed is the job key's last part).
    base = next(m for m in ref["models"] if m["strategy"] == "baseline")
    jobs = study_jobs(quick, [Run.from_dict(base)])
    assert {int(k.rsplit("/", 1)[1]) for k in jobs} == set(quick.seed_list)
    assert {p["seed"] for p in jobs.values()} == set(quick.seed_list)
