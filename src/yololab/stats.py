"""Seed-noise statistics for ablations: mean/std over seeds and paired differences with a 95% CI."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy import stats as scipy_stats


@dataclass
class Summary:
    """Mean and sample standard deviation of one metric over seeds."""

    mean: float
    std: float
    n: int


@dataclass
class PairedDiff:
    """Paired (same seed) difference variant - baseline with a two-sided t confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    verdict: str  # better / worse / within noise / n/a

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(values: list[float]) -> Summary:
    """Mean and sample std (ddof=1; 0 for a single value)."""
    n = len(values)
    if n == 0:
        return Summary(math.nan, math.nan, 0)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Summary(mean, std, n)


def paired_difference(variant: dict[int, float], baseline: dict[int, float], *, confidence: float = 0.95,
                      higher_is_better: bool = True) -> PairedDiff:
    """Compare per-seed values of a variant with the baseline's on the seeds both have.

    The interval is mean(d) +- t_{n-1} * sd(d) / sqrt(n) over the paired differences d. The verdict is
    "better" or "worse" only when the whole interval lies on one side of zero, otherwise "within noise";
    with fewer than two pairs there is no interval ("n/a").
    """
    seeds = sorted(set(variant) & set(baseline))
    diffs = [variant[s] - baseline[s] for s in seeds]
    n = len(diffs)
    if n == 0:
        return PairedDiff(math.nan, math.nan, math.nan, 0, "n/a")
    s = summarize(diffs)
    if n < 2:
        return PairedDiff(s.mean, math.nan, math.nan, n, "n/a")
    half = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * s.std / math.sqrt(n)
    low, high = s.mean - half, s.mean + half
    if low > 0:
        verdict = "better" if higher_is_better else "worse"
    elif high < 0:
        verdict = "worse" if higher_is_better else "better"
    else:
        verdict = "within noise"
    return PairedDiff(s.mean, low, high, n, verdict)
