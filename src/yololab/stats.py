"""Ablation statistics: seed summaries, paired t intervals and tests (difference, equivalence), Holm, power,
bootstrap helpers and the sequential level of `seeds=auto`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
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


# ------------------------------------------------------------------------------------------ tests and design
@dataclass
class PairedTest:
    """The paired t analysis of per-seed differences d: mean, sd, the two-sided p-value for "no difference", the
    90% interval and TOST p-value for "equivalent within ±margin", and the design's power figures."""

    mean: float
    sd: float
    n: int
    p_difference: float
    eq_low: float
    eq_high: float
    p_equivalence: float
    mde: float  # smallest |difference| detected with ``power`` at ``alpha`` with these n seeds
    seeds_needed: int | None  # seeds that detect a ``margin`` difference with ``power`` (None: more than 10,000)

    def to_dict(self) -> dict:
        return asdict(self)


def paired_test(diffs: list[float], margin: float, *, alpha: float = 0.05, power: float = 0.8) -> PairedTest:
    """Two-sided paired t test of "no difference" and two one-sided tests (TOST) of "|difference| >= margin".

    The TOST p-value is the larger of the two one-sided p-values; it is below ``alpha`` exactly when the
    ``1 - 2 alpha`` interval (90% for alpha 5%) lies inside ±margin. Needs two or more differences.
    """
    s = summarize(diffs)
    if s.n < 2:
        raise ValueError("a paired t test needs at least two paired differences")
    df, se = s.n - 1, s.std / math.sqrt(s.n)
    half = scipy_stats.t.ppf(1 - alpha, df) * se
    if se > 0:
        p_diff = float(2 * scipy_stats.t.sf(abs(s.mean) / se, df))
        p_eq = float(max(scipy_stats.t.sf((s.mean + margin) / se, df), scipy_stats.t.cdf((s.mean - margin) / se, df)))
    else:  # every seed gave the same difference
        p_diff = 0.0 if s.mean != 0 else 1.0
        p_eq = 0.0 if abs(s.mean) < margin else 1.0
    return PairedTest(s.mean, s.std, s.n, p_diff, s.mean - half, s.mean + half, p_eq,
                      minimum_detectable_effect(s.std, s.n, alpha=alpha, power=power),
                      seeds_needed(s.std, margin, alpha=alpha, power=power))


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true paired difference that a two-sided paired t test at ``alpha`` detects with probability
    ``power`` with ``n`` seeds: ``(t(1 - alpha/2, n-1) + t(power, n-1)) sd / sqrt(n)`` (the usual approximation
    of the noncentral t power)."""
    if n < 2:
        return math.nan
    df = n - 1
    return float((scipy_stats.t.ppf(1 - alpha / 2, df) + scipy_stats.t.ppf(power, df)) * sd / math.sqrt(n))


def seeds_needed(sd: float, margin: float, *, alpha: float = 0.05, power: float = 0.8,
                 limit: int = 10_000) -> int | None:
    """Fewest seeds whose minimum detectable effect is at most ``margin`` (the t quantiles' degrees of freedom
    follow n, so n is searched, not solved); None beyond ``limit``."""
    if sd == 0:
        return 2
    z = (scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power)) * sd / margin
    n = max(2, math.ceil(z * z))  # the normal approximation is a lower bound: step up from it
    while n <= limit:
        if minimum_detectable_effect(sd, n, alpha=alpha, power=power) <= margin:
            return n
        n += 1
    return None


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error control over the family given); NaN stays NaN."""
    valid = sorted((p, k) for k, p in p_values.items() if not math.isnan(p))
    adjusted, running = {k: math.nan for k in p_values}, 0.0
    for i, (p, k) in enumerate(valid):
        running = max(running, min(1.0, (len(valid) - i) * p))
        adjusted[k] = running
    return adjusted


def bootstrap_p_values(draws: np.ndarray, margin: float) -> tuple[float, float]:
    """Percentile-bootstrap p-values of a difference's draws: two-sided for "no difference", and the larger
    one-sided one of the equivalence pair (``P(d >= margin)``, ``P(d <= -margin)``); resolution 1/len(draws)."""
    n = len(draws)
    p_diff = min(1.0, 2 * min(np.sum(draws <= 0) + 1, np.sum(draws >= 0) + 1) / (n + 1))
    p_eq = max(np.sum(draws >= margin) + 1, np.sum(draws <= -margin) + 1) / (n + 1)
    return float(p_diff), float(min(1.0, p_eq))


def crossed_bootstrap(diffs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two-level (seeds x images) bootstrap of a mean paired difference.

    ``diffs[s, b]`` is seed s's difference on image resample b (the same image resample for every seed: all runs
    see the same test set). Each draw b also resamples the seeds with replacement and averages them, so the draws
    carry both noises: training (seeds) and test set (images). Returns ``(B,)`` draws.
    """
    n_seeds, n_draws = diffs.shape
    picks = rng.integers(0, n_seeds, size=(n_draws, n_seeds))
    return diffs[picks, np.arange(n_draws)[:, None]].mean(1)


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap draws."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def sequential_alpha(alpha: float, looks: int) -> float:
    """Level of each look of a sequential design with at most ``looks`` looks: ``alpha / looks`` (Bonferroni
    alpha spending, a conservative Pocock-type boundary: the chance of a false verdict at any look is at most
    ``alpha`` whatever the correlation between looks)."""
    return alpha / max(looks, 1)


VERDICTS = ("better", "worse", "equivalent", "inconclusive")


def verdict(mean: float, p_difference: float, p_equivalence: float, alpha: float,
            higher_is_better: bool = True) -> str:
    """One of ``VERDICTS`` from (multiplicity-adjusted) p-values: a difference is claimed first, equivalence
    only when no difference is shown; NaN p-values (too few seeds) give "n/a"."""
    if math.isnan(p_difference):
        return "n/a"
    if p_difference < alpha:
        return "better" if (mean > 0) == higher_is_better else "worse"
    return "equivalent" if p_equivalence < alpha else "inconclusive"
