"""The runs of a comparison (``RunResult``) and their statistics: mean/std over seeds, paired differences.

The numbers come from core ``yololab.stats``; this module decides which metrics are compared and in which
direction (accuracy: higher is better; training costs: lower is better).
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from ..stats import paired_difference, summarize


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


def analyse(results: list[RunResult], models: list[str], costs: dict[str, dict]) -> dict[str, Any]:
    """Per-model mean/std over seeds and paired differences against the first model (the baseline)."""
    by_model: dict[str, dict[int, dict]] = {m: {} for m in models}
    for r in results:
        if r.ok:
            by_model[r.model][r.seed] = r.metrics
    baseline = models[0]
    summary: dict[str, Any] = {"baseline": Path(baseline).stem, "models": {}}
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
        summary["models"][Path(model).stem] = entry
    return summary


def _per_seed(runs: dict[int, dict], metric: str) -> dict[int, float]:
    return {s: float(m[metric]) for s, m in runs.items() if m.get(metric) is not None}


def _stat(values: dict[int, float]) -> dict[str, Any]:
    s = summarize(list(values.values()))
    return {"mean": s.mean, "std": s.std, "n": s.n, "per_seed": values}
