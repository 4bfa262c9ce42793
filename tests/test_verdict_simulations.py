"""Monte Carlo checks of the verdicts' error rates and of the bootstrap's coverage (synthetic runs, no training).

The fast versions use repetition counts that run in seconds; the ``slow`` ones repeat them at sizes whose Monte
Carlo error is small. Tolerances are the nominal rate plus 3 Monte Carlo standard errors.
"""

import math

import numpy as np
import pytest

from synthetic_detections import rescored, synthetic_detection_set
from yololab.ablation.bootstrap import MatchedStats
from yololab.ablation.sequential import run_sequential
from yololab.ablation.statistics import RunResult, analyse
from yololab.stats import crossed_bootstrap, minimum_detectable_effect, percentile_interval

MARGIN = 1.0  # points
ALPHA = 0.05


def _models(variants: int) -> list[str]:
    return ["base.yaml"] + [f"v{i}.yaml" for i in range(variants)]


def _draw_runs(rng, models, seeds, effect, sd):
    """mAP per model and seed: a shared seed effect (what pairing removes), the variants' true ``effect`` (points)
    and independent run noise of ``sd`` points (differences then have sd * sqrt(2))."""
    results = []
    for s in seeds:
        shared = rng.normal(40, 2)
        for k, m in enumerate(models):
            value = shared + (effect if k else 0.0) + rng.normal(0, sd)
            results.append(RunResult(m, s, True, {"map": value / 100}))
    return results


def _round_trainer(rng, models, effect, sd):
    """A ``train(models, seeds)`` callback for ``run_sequential`` drawing runs like ``_draw_runs`` (a seed's shared
    effect is drawn once, whichever round first trains it)."""
    shared: dict[int, float] = {}

    def train(round_models, seeds):
        results = []
        for s in seeds:
            shared.setdefault(s, rng.normal(40, 2))
            for m in round_models:
                value = shared[s] + (effect if m != models[0] else 0.0) + rng.normal(0, sd)
                results.append(RunResult(m, s, True, {"map": value / 100}))
        return results

    return train


def _rates(outcomes: list[list[tuple[str, bool]]]) -> dict[str, float]:
    """Share of repetitions in which ANY variant got each verdict (the family-wise rate); "tost": in which any
    variant's equivalence test rejected, whether or not a difference was claimed first."""
    rates = {v: float(np.mean([any(c == v for c, _ in o) for o in outcomes])) for v in ("better", "worse",
                                                                                          "equivalent")}
    rates["tost"] = float(np.mean([any(shown for _, shown in o) for o in outcomes]))
    return rates


def _outcomes(summary: dict, models: list[str]) -> list[tuple[str, bool]]:
    """(conclusion, equivalence shown) of the primary metric, per variant."""
    level = summary["settings"]["level"]
    return [(d["conclusion"], d["p_equivalence_holm"] < level)
            for d in (summary["models"][m[:-5]]["vs_baseline"]["map"] for m in models[1:])]


def _fixed(rng, reps, variants, seeds, effect, sd):
    models = _models(variants)
    out = []
    for _ in range(reps):
        summary = analyse(_draw_runs(rng, models, range(seeds), effect, sd), models, {}, margin=MARGIN)
        out.append(_outcomes(summary, models))
    return out


def _sequential(rng, reps, variants, max_seeds, effect, sd):
    models = _models(variants)
    out, seeds_used = [], []
    def look(results, looks):
        return analyse(results, models, {}, margin=MARGIN, looks=looks)

    for _ in range(reps):
        train = _round_trainer(rng, models, effect, sd)
        _, summary, used = run_sequential(models, max_seeds, train, look, primary="map", log=lambda msg: None)
        out.append(_outcomes(summary, models))
        seeds_used += list(used.values())
    return out, float(np.mean(seeds_used))


def _bound(rate: float, reps: int) -> float:
    return rate + 3 * math.sqrt(rate * (1 - rate) / reps)


def _check_fixed_design(reps):
    rng = np.random.default_rng(0)
    null = _rates(_fixed(rng, reps, variants=3, seeds=3, effect=0.0, sd=0.5))
    assert null["better"] + null["worse"] <= _bound(ALPHA, reps), null  # Holm: family-wise over 3 variants
    # at the margin with a tight spread the TOST works at its full size (about 5%); a difference is then shown
    # too and claimed first, so "equivalent" itself is rarer still
    at_margin = _rates(_fixed(rng, reps, variants=1, seeds=8, effect=MARGIN, sd=0.1))
    assert at_margin["tost"] <= _bound(ALPHA, reps) and at_margin["equivalent"] <= at_margin["tost"], at_margin
    loose = _rates(_fixed(rng, reps, variants=1, seeds=8, effect=MARGIN, sd=0.5))
    assert loose["equivalent"] <= _bound(ALPHA, reps), loose
    sd_diff = 0.5 * math.sqrt(2)
    mde = minimum_detectable_effect(sd_diff, 5)
    power = _rates(_fixed(rng, reps, variants=1, seeds=5, effect=mde, sd=0.5))["better"]
    assert abs(power - 0.8) <= 3 * math.sqrt(0.16 / reps) + 0.03, power  # the MDE is what 80% power detects
    return null, at_margin, loose, power


def _check_sequential(reps):
    rng = np.random.default_rng(1)
    null, _ = _sequential(rng, reps, variants=2, max_seeds=8, effect=0.0, sd=0.5)
    null = _rates(null)
    assert null["better"] + null["worse"] <= _bound(ALPHA, reps), null
    at_margin, _ = _sequential(rng, reps, variants=1, max_seeds=8, effect=MARGIN, sd=0.5)
    at_margin = _rates(at_margin)
    assert at_margin["equivalent"] <= _bound(ALPHA, reps) and at_margin["tost"] <= _bound(ALPHA, reps), at_margin
    clear, mean_seeds = _sequential(rng, reps, variants=1, max_seeds=8, effect=3.0, sd=0.5)
    assert _rates(clear)["better"] > 0.9 and mean_seeds < 5  # a clear gain stops early
    return null, at_margin, mean_seeds


def _coverage(test_sets, draws, images=40, population=300, metric="map50"):
    """Share of test sets (``images`` drawn from a ``population`` of images) whose 95% paired bootstrap interval of
    detector B - detector A holds the population's difference (the known answer)."""
    gt, first = synthetic_detection_set(seed=11, images=population, detections=30)
    a, b = MatchedStats(gt, first), MatchedStats(gt, rescored(first, seed=1, noise=0.15))
    everything = np.ones(population)
    truth = (b.metrics(everything, (metric,))[metric] - a.metrics(everything, (metric,))[metric])[0]
    rng = np.random.default_rng(2)
    covered = []
    for _ in range(test_sets):
        test_set = rng.integers(0, population, images)
        resampled = test_set[rng.integers(0, images, (draws, images))]
        weights = np.zeros((draws, population), np.float32)
        np.add.at(weights, (np.arange(draws)[:, None], resampled), 1)
        diffs = b.metrics(weights, (metric,))[metric] - a.metrics(weights, (metric,))[metric]
        low, high = percentile_interval(crossed_bootstrap(diffs[None], rng), 0.95)  # one seed: images only
        covered.append(low <= truth <= high)
    return float(np.mean(covered))


def test_fixed_design_error_rates():
    _check_fixed_design(reps=200)


def test_seeds_auto_keeps_its_error_rates_and_stops_early_on_a_clear_gain():
    _check_sequential(reps=60)


def test_image_bootstrap_covers_the_known_difference():
    coverage = _coverage(test_sets=40, draws=200, population=120)
    assert 0.82 <= coverage <= 1.0, coverage


@pytest.mark.slow
def test_fixed_design_error_rates_large():
    print(_check_fixed_design(reps=4000))


@pytest.mark.slow
def test_seeds_auto_error_rates_large():
    print(_check_sequential(reps=1500))


@pytest.mark.slow
def test_image_bootstrap_coverage_large():
    coverage = _coverage(test_sets=600, draws=1000)
    print(coverage)
    assert abs(coverage - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / 600) + 0.01, coverage
