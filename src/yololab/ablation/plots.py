"""The comparison's plots: mAP against GFLOPs and latency, per-metric bars, overlaid validation-mAP curves."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..plots import save_figure
from .statistics import ACCURACY_METRICS, METRIC_LABELS, RunResult


def write_plots(summary: dict[str, Any], results: list[RunResult], out: Path) -> list[Path]:
    """mAP50-95 vs GFLOPs and vs latency, per-metric bars, overlaid validation-mAP curves."""
    models = summary["models"]
    paths = []
    for key, label, name in (("gflops", "GFLOPs", "map_vs_gflops.png"), ("latency_ms", "CPU latency (ms, fused)",
                                                                         "map_vs_latency.png")):
        points = {m: (e["cost"][key], e["metrics"]["map"]["mean"], e["metrics"]["map"]["std"])
                  for m, e in models.items() if e["cost"].get(key) is not None and e["metrics"]["map"]["n"]}
        if points:
            paths.append(plot_tradeoff(points, label, "mAP50-95", out / name))
    bars = {METRIC_LABELS[k]: {m: (e["metrics"][k]["mean"], e["metrics"][k]["std"]) for m, e in models.items()}
            for k in ACCURACY_METRICS if all(e["metrics"][k]["n"] for e in models.values())}
    if bars:
        paths.append(plot_metric_bars(bars, out / "metrics.png"))
    curves = _validation_curves(results)
    if curves:
        paths.append(plot_curves(curves, "epoch", "validation mAP50-95", out / "val_curves.png"))
    return paths


def _validation_curves(results: list[RunResult]) -> dict[str, list[tuple[list[int], list[float]]]]:
    """``{model: [(epochs, mAP50-95), one per seed]}`` from the finished runs' results.csv files."""
    curves: dict[str, list] = {}
    for r in results:
        csv_file = Path(r.run_dir) / "results.csv"
        if r.ok and csv_file.is_file():
            with open(csv_file) as f:
                rows = [row for row in csv.DictReader(f) if row.get("metrics/mAP50-95")]
            if rows:
                curves.setdefault(Path(r.model).stem, []).append(
                    ([int(row["epoch"]) for row in rows], [float(row["metrics/mAP50-95"]) for row in rows]))
    return curves


def plot_tradeoff(points: dict[str, tuple[float, float, float]], xlabel: str, ylabel: str,
                  file: str | Path) -> Path:
    """One point per model: ``{name: (x, y_mean, y_std)}`` with vertical error bars (e.g. mAP vs GFLOPs)."""
    fig = Figure(figsize=(6, 4.5), tight_layout=True)
    ax = fig.subplots()
    for i, (name, (x, y, err)) in enumerate(points.items()):
        ax.errorbar([x], [y], yerr=[err], fmt="o", capsize=4, color=f"C{i % 10}", label=name)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return save_figure(fig, file)


def plot_metric_bars(values: dict[str, dict[str, tuple[float, float]]], file: str | Path) -> Path:
    """Grouped bars with error bars: ``{metric: {model: (mean, std)}}``."""
    metrics = list(values)
    models = list(next(iter(values.values()))) if values else []
    fig = Figure(figsize=(max(6.0, 1.2 * len(metrics) * max(len(models), 1) / 2), 4.5), tight_layout=True)
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    for j, model in enumerate(models):
        xs = np.arange(len(metrics)) + (j - (len(models) - 1) / 2) * width
        means = [values[m][model][0] for m in metrics]
        stds = [values[m][model][1] for m in metrics]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=model, color=f"C{j % 10}")
    ax.set_xticks(np.arange(len(metrics)), metrics)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, file)


def plot_curves(curves: dict[str, list[tuple[Sequence[float], Sequence[float]]]], xlabel: str, ylabel: str,
                file: str | Path) -> Path:
    """Overlaid curves, one colour per group (e.g. validation mAP per epoch, one line per seed of a model)."""
    fig = Figure(figsize=(6.5, 4.5), tight_layout=True)
    ax = fig.subplots()
    for i, (name, lines) in enumerate(curves.items()):
        for k, (x, y) in enumerate(lines):
            ax.plot(x, y, color=f"C{i % 10}", alpha=0.8, label=name if k == 0 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, file)
