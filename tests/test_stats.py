"""The statistics of `yololab compare`: seed summaries, paired t tests, TOST, Holm, power, bootstrap helpers."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from yololab.stats import (
    bootstrap_p_values,
    crossed_bootstrap,
    holm,
    minimum_detectable_effect,
    paired_difference,
    paired_test,
    percentile_interval,
    seeds_needed,
    sequential_alpha,
    summarize,
    verdict,
)


def test_summary_uses_sample_std():
    s = summarize([0.40, 0.42, 0.44])
    assert s.mean == pytest.approx(0.42) and s.std == pytest.approx(0.02) and s.n == 3


def test_constant_offset_is_better():
    base = {0: 0.40, 1: 0.45, 2: 0.38}
    variant = {k: v + 0.01 for k, v in base.items()}
    d = paired_difference(variant, base)
    assert d.verdict == "better" and d.mean == pytest.approx(0.01)
    assert d.low == pytest.approx(0.01) and d.high == pytest.approx(0.01)
    assert paired_difference(base, variant).verdict == "worse"


def test_identical_distributions_are_within_noise():
    base = {0: 0.40, 1: 0.45, 2: 0.38, 3: 0.42}
    variant = {0: 0.45, 1: 0.38, 2: 0.42, 3: 0.40}  # same values, other seeds
    assert paired_difference(variant, base).verdict == "within noise"


def test_interval_matches_hand_computation():
    base = {0: 0.50, 1: 0.52, 2: 0.47}
    variant = {0: 0.53, 1: 0.53, 2: 0.51}  # d = 0.03, 0.01, 0.04
    d = paired_difference(variant, base)
    mean = (0.03 + 0.01 + 0.04) / 3
    sd = math.sqrt(((0.03 - mean) ** 2 + (0.01 - mean) ** 2 + (0.04 - mean) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert d.mean == pytest.approx(mean)
    assert d.low == pytest.approx(mean - half) and d.high == pytest.approx(mean + half)
    assert d.low < 0 < d.high and d.verdict == "within noise"  # 0.027 +- 0.038: three seeds are not enough


def test_lower_is_better_metrics_flip_the_verdict():
    base = {0: 10.0, 1: 11.0}
    faster = {0: 8.0, 1: 9.0}
    assert paired_difference(faster, base, higher_is_better=False).verdict == "better"


def test_single_seed_has_no_interval():
    d = paired_difference({0: 0.5}, {0: 0.4})
    assert d.verdict == "n/a" and math.isnan(d.low)


def test_paired_test_matches_hand_computation_and_tost_reads_the_90_percent_interval():
    diffs = [0.3, 0.1, 0.4, 0.2]
    t = paired_test(diffs, margin=1.0)
    mean, sd = 0.25, math.sqrt(sum((d - 0.25) ** 2 for d in diffs) / 3)
    se = sd / 2
    assert t.mean == pytest.approx(mean) and t.sd == pytest.approx(sd)
    assert t.p_difference == pytest.approx(2 * scipy_stats.t.sf(mean / se, 3))
    half = 2.3533634348018264 * se  # t_{0.95, 3}
    assert (t.eq_low, t.eq_high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert t.p_equivalence == pytest.approx(scipy_stats.t.cdf((mean - 1.0) / se, 3))  # the nearer bound decides
    for margin in (t.eq_high * 0.999, t.eq_high * 1.001):  # p < 5% exactly when the 90% interval is inside
        assert (paired_test(diffs, margin).p_equivalence < 0.05) == (margin > t.eq_high)


def test_power_figures_agree_with_each_other():
    sd = 0.8
    n = seeds_needed(sd, 1.0)
    assert minimum_detectable_effect(sd, n) <= 1.0 < minimum_detectable_effect(sd, n - 1)
    assert minimum_detectable_effect(sd, 3) == pytest.approx((4.302652729911275 + 1.0606601717798212) * sd
                                                             / math.sqrt(3))
    assert seeds_needed(0.0, 1.0) == 2 and seeds_needed(100.0, 0.01) is None  # > 10,000 seeds


def test_holm_steps_down():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan})
    assert adjusted["a"] == pytest.approx(0.03) and adjusted["c"] == pytest.approx(0.06)
    assert adjusted["b"] == pytest.approx(0.06) and math.isnan(adjusted["d"])  # monotone: b not below c


def test_verdict_claims_a_difference_first_then_equivalence():
    assert verdict(0.5, 0.01, 0.01, 0.05) == "better" and verdict(-0.5, 0.01, 0.9, 0.05) == "worse"
    assert verdict(-0.5, 0.01, 0.9, 0.05, higher_is_better=False) == "better"
    assert verdict(0.1, 0.5, 0.01, 0.05) == "equivalent" and verdict(0.1, 0.5, 0.2, 0.05) == "inconclusive"
    assert verdict(0.1, math.nan, math.nan, 0.05) == "n/a"


def test_bootstrap_helpers():
    draws = np.linspace(-1, 3, 4001)
    assert percentile_interval(draws, 0.9) == (pytest.approx(-0.8), pytest.approx(2.8))
    p_diff, p_eq = bootstrap_p_values(draws, margin=2.0)
    assert p_diff == pytest.approx(2 * 1001 / 4002, abs=1e-3) and p_eq == pytest.approx(1002 / 4002, abs=1e-3)  # P(d >= 2); none <= -2
    same_seed = crossed_bootstrap(np.array([[1.0, 2.0, 3.0]]), np.random.default_rng(0))
    assert same_seed.tolist() == [1.0, 2.0, 3.0]  # one seed: the image draws themselves
    assert sequential_alpha(0.05, 5) == pytest.approx(0.01)
