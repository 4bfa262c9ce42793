"""Paired seed statistics used by `yololab compare`."""

import math

import pytest

from yololab.stats import paired_difference, summarize


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
