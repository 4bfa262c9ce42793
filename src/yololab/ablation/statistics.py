"""The runs of a comparison (``RunResult``) and their statistics: mean/std over seeds, paired differences and,
for accuracy, the verdicts (better / worse / equivalent / inconclusive) with both noises and multiplicity handled.

The numbers come from core ``yololab.stats``; this module decides which metrics are compared and in which
direction (accuracy: higher is better; training costs: lower is better).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..health import collapse_events
from ..stats import (
    bootstrap_p_values,
    crossed_bootstrap,
    holm,
    paired_difference,
    paired_test,
    percentile_interval,
    sequential_alpha,
    summarize,
    verdict,
)
from .bootstrap import MatchedStats, image_weights, load_predictions

ACCURACY_METRICS = ("map", "map50", "aps", "apm", "apl")
METRIC_LABELS = {"map": "mAP50-95", "map50": "mAP50", "aps": "APs", "apm": "APm", "apl": "APl"}
TRAINING_COSTS = ("epoch_time_s", "peak_rss_mb")  # lower is better


NOT_RUN = "not run yet (report_only=true)"


@dataclass
class RunResult:
    """Outcome of one training run of one model with one seed."""

    model: str
    seed: int
    ok: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    run_dir: str = ""
    machine: str = ""  # where it trained: the same seed gives bit-identical runs only on the same hardware

    @property
    def not_run(self) -> bool:
        """True for a run that ``report_only`` left untrained (neither finished nor failed)."""
        return self.error == NOT_RUN


def analyse(results: list[RunResult], models: list[str], costs: dict[str, dict], *, margin: float = 1.0,
            primary: str = "map", alpha: float = 0.05, looks: int = 1, ground_truth: dict | None = None,
            resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per-model mean/std over seeds and paired differences against the first model (the baseline).

    Accuracy metrics also get the four-way verdict (``conclusion``): paired t tests of difference and of
    equivalence within ±``margin`` points, combined with the seeds x images bootstrap when the runs kept their
    predictions and ``ground_truth`` is given, Holm-adjusted over the variants per metric, each at level
    ``alpha / looks`` (``looks``: the planned looks of ``seeds=auto``, 1 otherwise).
    """
    by_model: dict[str, dict[int, dict]] = {m: {} for m in models}
    for r in results:
        if r.ok:
            by_model[r.model][r.seed] = r.metrics
    baseline = models[0]
    level = sequential_alpha(alpha, looks)
    bootstrap = _bootstrap_draws(results, models, ground_truth, resamples, seed)
    summary: dict[str, Any] = {
        "baseline": Path(baseline).stem, "models": {},
        "settings": {"margin": margin, "primary": primary, "alpha": alpha, "looks": looks, "level": level,
                     "resamples": resamples if bootstrap["draws"] else 0, "bootstrap": bootstrap["note"]}}
    for model in models:
        runs = by_model[model]
        entry: dict[str, Any] = {"runs": len(runs),
                                 "failed": sum(r.model == model and not r.ok and not r.not_run for r in results),
                                 "not_run": sum(r.model == model and r.not_run for r in results),
                                 "cost": costs.get(model, {}), "metrics": {}, "vs_baseline": {}}
        for metric in ACCURACY_METRICS + TRAINING_COSTS:
            values = _per_seed(runs, metric)
            entry["metrics"][metric] = _stat(values)
            if model != baseline:
                diff = paired_difference(values, _per_seed(by_model[baseline], metric),
                                         higher_is_better=metric not in TRAINING_COSTS)
                entry["vs_baseline"][metric] = diff.to_dict()
        per_class = {s: m.get("per_class", {}) for s, m in runs.items()}
        classes = dict.fromkeys(name for table in per_class.values() for name in table)  # dataset order
        entry["per_class_ap"] = {name: _stat(_per_seed({s: t.get(name, {}) for s, t in per_class.items()}, "ap"))
                                 for name in classes}
        entry["health"] = run_health([r for r in results if r.model == model and r.ok])
        summary["models"][Path(model).stem] = entry
    variants = [Path(m).stem for m in models[1:]]
    for metric in ACCURACY_METRICS:
        _add_verdicts(summary, variants, metric, by_model, models, bootstrap["draws"].get(metric, {}),
                      margin / 100, level)
    return summary


def run_health(results: list[RunResult]) -> dict[str, Any]:
    """Validation collapses of each finished run (``health.collapse_events`` on its results.csv): a model whose runs
    collapse may be measured through a training defect, not through the module, so the report marks it."""
    events: dict[str, list[str]] = {}
    for r in sorted(results, key=lambda r: r.seed):
        curve = Path(r.run_dir) / "results.csv"
        if curve.is_file():
            with open(curve, newline="") as f:
                found = collapse_events(csv.DictReader(f))
            if found:
                events[str(r.seed)] = [e.describe() for e in found]
    return {"runs": len(results), "unhealthy_runs": len(events), "collapses": events}


def _add_verdicts(summary: dict, variants: list[str], metric: str, by_model: dict, models: list[str],
                  draws: dict[str, np.ndarray], margin: float, level: float) -> None:
    """Tests, Holm over the variants, power figures and the conclusion of one metric, into ``vs_baseline``."""
    family = {}
    for name, model in zip(variants, models[1:]):
        d = summary["models"][name]["vs_baseline"][metric]
        base = _per_seed(by_model[models[0]], metric)
        diffs = [v - base[s] for s, v in sorted(_per_seed(by_model[model], metric).items()) if s in base]
        d.update(sd=math.nan, p_difference=math.nan, p_equivalence=math.nan, eq_low=math.nan, eq_high=math.nan,
                 mde=math.nan, seeds_needed=None, bootstrap=None)
        if len(diffs) >= 2:
            # the power figures use Holm's strictest step (level / variants): enough seeds for any rank
            test = paired_test(diffs, margin, alpha=level / max(len(variants), 1))
            eq = paired_test(diffs, margin, alpha=level)  # the 90% interval (alpha 5%) that the TOST reads
            d.update(sd=test.sd, p_difference=test.p_difference, p_equivalence=test.p_equivalence,
                     eq_low=eq.eq_low, eq_high=eq.eq_high, mde=test.mde, seeds_needed=test.seeds_needed)
        if name in draws and len(diffs) >= 2:
            boot = draws[name]
            p_diff, p_eq = bootstrap_p_values(boot, margin)
            low, high = percentile_interval(boot, 0.95)
            eq_low, eq_high = percentile_interval(boot, 1 - 2 * level)
            d["bootstrap"] = {"low": low, "high": high, "eq_low": eq_low, "eq_high": eq_high,
                              "p_difference": p_diff, "p_equivalence": p_eq, "draws": len(boot)}
            # both noises must agree: the larger p-value (an intersection-union test keeps the level)
            d["p_difference"] = max(d["p_difference"], p_diff)
            d["p_equivalence"] = max(d["p_equivalence"], p_eq)
        family[name] = d
    p_diff = holm({n: d["p_difference"] for n, d in family.items()})
    p_eq = holm({n: d["p_equivalence"] for n, d in family.items()})
    for name, d in family.items():
        d["p_difference_holm"], d["p_equivalence_holm"] = p_diff[name], p_eq[name]
        d["conclusion"] = verdict(d["mean"], p_diff[name], p_eq[name], level)


def _bootstrap_draws(results: list[RunResult], models: list[str], ground_truth: dict | None, resamples: int,
                     seed: int) -> dict[str, Any]:
    """``{"draws": {metric: {variant: (B,) seeds x images draws of the difference}}, "note": what was done}``.

    One image resample per draw, shared by every run (they all saw the same test set); the seeds are resampled
    inside ``crossed_bootstrap``. Needs the runs' kept predictions and the validation ground truth.
    """
    if ground_truth is None or resamples <= 0:
        return {"draws": {}, "note": "off (no validation ground truth given)"}
    matched: dict[tuple[str, int], MatchedStats] = {}
    mismatched = []
    for r in results:
        predictions = load_predictions(r.run_dir) if r.ok and r.run_dir else None
        if predictions is not None:
            try:
                matched[r.model, r.seed] = MatchedStats(ground_truth, predictions)
            except ValueError as e:  # predictions of another val split: left out, and said so
                mismatched.append(f"{Path(r.run_dir).name}: {e}")
    if not matched:
        why = f" ({'; '.join(mismatched)})" if mismatched else ""
        return {"draws": {}, "note": "needs per-image predictions (predictions.json.gz in each run folder) of this "
                                     f"val split; these runs have none{why}, so only the seed interval is used"}
    rng = np.random.default_rng(seed)
    n_images = next(iter(matched.values())).n_images
    weights = image_weights(rng, n_images, resamples)
    per_run = {key: m.metrics(weights, ACCURACY_METRICS) for key, m in matched.items()}
    draws: dict[str, dict[str, np.ndarray]] = {m: {} for m in ACCURACY_METRICS}
    base = models[0]
    for model in models[1:]:
        seeds = sorted(s for (m, s) in per_run if m == model and (base, s) in per_run)
        if not seeds:
            continue
        for metric in ACCURACY_METRICS:
            diffs = np.stack([per_run[model, s][metric] - per_run[base, s][metric] for s in seeds])
            combined = crossed_bootstrap(diffs, rng)
            combined = combined[~np.isnan(combined)]  # resamples without a box of that size
            if len(combined):
                draws[metric][Path(model).stem] = combined
    skipped = len([r for r in results if r.ok]) - len(matched)
    note = f"seeds x images, {resamples} draws" + (f" ({skipped} run(s) without usable predictions left out)"
                                                   if skipped else "")
    return {"draws": draws, "note": note}


def _per_seed(runs: dict[int, dict], metric: str) -> dict[int, float]:
    return {s: float(m[metric]) for s, m in runs.items() if m.get(metric) is not None}


def _stat(values: dict[int, float]) -> dict[str, Any]:
    s = summarize(list(values.values()))
    return {"mean": s.mean, "std": s.std, "n": s.n, "per_seed": values}
