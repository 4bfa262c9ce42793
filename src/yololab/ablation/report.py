"""The comparison's report files: ``report.md`` (the table to paste into a paper), ``report.csv`` and
``report.json``."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

from ..utils.files import write_json
from .statistics import ACCURACY_METRICS, METRIC_LABELS, TRAINING_COSTS, RunResult

VERDICT_COLUMNS = ("conclusion", "boot_low", "boot_high", "eq_low", "eq_high", "mde", "seeds_needed")


def write_report(summary: dict[str, Any], recipe: dict, out: Path, results: list[RunResult],
                 family_recipes: dict[str, dict] | None = None) -> dict[str, Path]:
    """report.md, report.csv and report.json in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report.md", "csv": out / "report.csv", "json": out / "report.json"}
    write_json(paths["json"], {"summary": summary, "recipe": recipe, "family_recipes": family_recipes or {},
                               "runs": [r.__dict__ for r in results]}, indent=1)
    _write_csv(summary, paths["csv"])
    paths["md"].write_text(format_markdown(summary, recipe, results, family_recipes))
    return paths


def _write_csv(summary: dict[str, Any], file: Path) -> None:
    """One row per model: costs, and per accuracy metric its mean/std and difference to the baseline."""
    with open(file, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "params", "gflops", "latency_ms", "onnx_latency_ms", "runs"]
                        + [f"{m}_{k}" for m in ACCURACY_METRICS for k in ("mean", "std", "diff", "low", "high",
                                                                           "verdict") + VERDICT_COLUMNS]
                        + [f"{m}_{k}" for m in TRAINING_COSTS for k in ("mean", "std")])
        for name, e in summary["models"].items():
            row = [name, e["cost"].get("params"), e["cost"].get("gflops"), e["cost"].get("latency_ms"),
                   e["cost"].get("onnx_latency_ms"), e["runs"]]
            for m in ACCURACY_METRICS:
                stat, d = e["metrics"][m], e["vs_baseline"].get(m, {})
                row += [stat["mean"], stat["std"], d.get("mean"), d.get("low"), d.get("high"), d.get("verdict", "")]
                boot = d.get("bootstrap") or {}
                row += [d.get("conclusion", ""), boot.get("low"), boot.get("high"), d.get("eq_low"), d.get("eq_high"),
                        d.get("mde"), d.get("seeds_needed")]
            row += [e["metrics"][m][k] for m in TRAINING_COSTS for k in ("mean", "std")]
            writer.writerow(row)


def format_markdown(summary: dict[str, Any], recipe: dict, results: list[RunResult],
                    family_recipes: dict[str, dict] | None = None) -> str:
    """The table a user pastes into a paper, with verdicts and the recipe."""
    lines = [f"# Ablation report (baseline: {summary['baseline']})", "",
             "Accuracy in percent, mean ± sample std over seeds.", "",
             "| model | params (M) | GFLOPs | CPU ms (fused) | ONNX ms | runs | "
             + " | ".join(METRIC_LABELS[m] for m in ACCURACY_METRICS) + " |",
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(ACCURACY_METRICS)]
    for name, e in summary["models"].items():
        c = e["cost"]
        runs = (f"{e['runs']}" + (f" ({e['failed']} failed)" if e["failed"] else "")
                + (f" ({e['not_run']} not run)" if e["not_run"] else ""))
        cells = [name, _num(c.get("params"), 1e-6, 2), _num(c.get("gflops"), 1, 2), _num(c.get("latency_ms"), 1, 1),
                 _num(c.get("onnx_latency_ms"), 1, 1), runs]
        cells += [_pm(e["metrics"][m]) for m in ACCURACY_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _health_lines(summary) + _verdict_lines(summary)
    lines += _training_cost_lines(summary) + _per_class_lines(summary)
    missing = [r for r in results if not r.ok]
    if missing:
        lines += ["", "## Runs without a result", ""] + [f"- {Path(r.model).stem} seed {r.seed}: {r.error}"
                                                         for r in missing]
    machines = Counter(r.machine or "not recorded" for r in results if r.ok)
    lines += ["", "## Machines", ""] + [f"- {m}: {n} run(s)" for m, n in machines.items()]
    if len(machines) > 1:
        lines += ["", "The same seed reproduces a run bit for bit only on the same hardware and software; runs from "
                  "different machines differ like different seeds do, so the intervals above include that noise."]
    lines += ["", "## Recipe (identical for every run)" if not family_recipes else "## Recipe", "", "```"]
    lines += [f"{k}: {v}" for k, v in recipe.items()] + ["```", ""]
    for model, overlay in (family_recipes or {}).items():
        lines += [f"{Path(model).stem} trains with its family's recipe (cfg/recipes/) for the keys you did not set: "
                  + ", ".join(f"{k}={v}" for k, v in overlay.items()), ""]
    return "\n".join(lines)


def _verdict_lines(summary: dict[str, Any]) -> list[str]:
    """The primary metric's verdict per variant in words, then every metric's table against the baseline."""
    settings = summary.get("settings", {})
    margin, primary, level = settings.get("margin", 1.0), settings.get("primary", "map"), settings.get("level", 0.05)
    looks = settings.get("looks", 1)
    tost = f"{(1 - 2 * level) * 100:.4g}% interval"  # what the two one-sided tests at ``level`` read
    lines = ["", "## Against the baseline", "",
             f"Δ is the paired (same seed) difference to the baseline in points. The verdict is **better** or "
             f"**worse** when a difference is shown, **equivalent** when the difference is shown to lie within "
             f"±{margin:.1f} points (two one-sided tests: the {tost} inside the margin), otherwise "
             f"**inconclusive**; **n/a** with fewer than two seeds. Each test runs at {level:.3g} "
             + (f"(5% over {looks} planned looks of seeds=auto) " if looks > 1 else "")
             + "and is Holm-adjusted over the variants of each metric. "
             f"The primary metric is {METRIC_LABELS[primary]}; the other metrics are secondary. "
             f"Image bootstrap: {settings.get('bootstrap', 'off')}. When it runs, a verdict needs both the seed "
             "t test and the seeds x images bootstrap to agree. MDE: the smallest difference these seeds detect "
             "with 80% power; seeds needed: to detect a difference of the margin.", ""]
    for name, e in summary["models"].items():
        d = e["vs_baseline"].get(primary)
        if d is not None and d["n"]:
            lines.append(f"- {name}: {_in_words(d, margin, tost)}")
    lines += ["", "| model | metric | Δ (points) | 95% interval | verdict | 95% interval, seeds x images "
              f"| {tost} | MDE | seeds needed |", "|---|---|---:|---|---|---|---|---:|---:|"]
    for name, e in summary["models"].items():
        for m in sorted(ACCURACY_METRICS, key=lambda k: k != primary):
            d = e["vs_baseline"].get(m)
            if d is None or not d["n"]:  # the baseline, or no seed run by both
                continue
            boot = d.get("bootstrap") or {}
            lines.append(f"| {name} | {METRIC_LABELS[m]} | {d['mean'] * 100:+.2f} | {_interval(d, 100, 2)} "
                         f"| {d.get('conclusion', d['verdict'])} | {_pair(boot.get('low'), boot.get('high'))} "
                         f"| {_pair(d.get('eq_low'), d.get('eq_high'))} | {_num(_finite(d.get('mde')), 100, 2)} "
                         f"| {_seeds(d.get('seeds_needed'))} |")
    return lines


def _in_words(d: dict, margin: float, tost: str) -> str:
    """The primary verdict as a sentence, e.g. "inconclusive: ~9 seeds would detect a 1.0-point difference"."""
    conclusion, delta = d.get("conclusion", d["verdict"]), f"Δ {d['mean'] * 100:+.2f} points"
    if conclusion in ("better", "worse"):
        return f"{conclusion} ({delta}, 95% interval {_interval(d, 100, 2)})"
    if conclusion == "equivalent":
        return f"equivalent within ±{margin:.1f} points ({delta}, {tost} {_pair(d['eq_low'], d['eq_high'])})"
    if conclusion == "n/a":
        return f"n/a: one seed in common ({delta}); at least two are needed"
    needed = d.get("seeds_needed")
    more = (f"~{needed} seeds would detect a {margin:.1f}-point difference" if needed is not None
            else f"more than 10,000 seeds would be needed to detect a {margin:.1f}-point difference")
    return f"inconclusive: {more} ({delta}; these {d['n']} seeds detect {_num(_finite(d.get('mde')), 100, 2)} points)"


def _pair(low: float | None, high: float | None) -> str:
    if _finite(low) is None or _finite(high) is None:
        return "—"
    return f"[{low * 100:+.2f}, {high * 100:+.2f}]"


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _seeds(n: int | None) -> str:
    return "—" if n is None else str(n)


def _health_lines(summary: dict[str, Any]) -> list[str]:
    """Models whose runs had validation collapses, named before their verdicts are read; or that none had."""
    lines, checked = [], 0
    for name, e in summary["models"].items():
        health = e.get("health", {})
        checked += health.get("runs", 0)
        if health.get("unhealthy_runs"):
            where = "; ".join(f"seed {seed} " + ", ".join(events) for seed, events in health["collapses"].items())
            lines.append(f"- **{name}**: {health['unhealthy_runs']} of {health['runs']} runs had validation collapses "
                         f"({where}). Its verdicts may measure a training defect, not the module "
                         "(docs/training.md, run health).")
    if not checked:
        return []
    if not lines:
        lines = [f"No validation collapse in any of the {checked} finished runs (docs/training.md, run health)."]
    return ["", "## Run health", ""] + lines


def _training_cost_lines(summary: dict[str, Any]) -> list[str]:
    """Seconds per training epoch (wall time, with its paired difference to the baseline) and peak memory."""
    lines = ["", "## Training cost", "",
             "Wall time of an epoch (training and validation, mean over the epochs) and peak resident memory of the "
             "training process, mean ± std over seeds; both depend on the machine and on whatever else it was running.",
             "",
             "| model | s / epoch | Δ s / epoch | 95% interval | verdict | peak memory (MB) |",
             "|---|---:|---:|---|---|---:|"]
    for name, e in summary["models"].items():
        d = e["vs_baseline"].get("epoch_time_s")
        if d is None or not d["n"]:  # the baseline itself, or no seed in common with it
            delta = ["—", "—", "baseline" if d is None else "n/a"]
        else:
            delta = [f"{d['mean']:+.1f}", _interval(d, 1, 1), d["verdict"]]
        cells = [name, _pm(e["metrics"]["epoch_time_s"], 1.0), *delta, _pm(e["metrics"]["peak_rss_mb"], 1.0)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _per_class_lines(summary: dict[str, Any]) -> list[str]:
    """AP50-95 per class, mean ± std over seeds (where the differences between models usually come from)."""
    classes = list(dict.fromkeys(c for e in summary["models"].values() for c in e["per_class_ap"]))
    if not classes:
        return []
    lines = ["", "## AP50-95 per class", "", "| model | " + " | ".join(classes) + " |",
             "|---|" + "---:|" * len(classes)]
    for name, e in summary["models"].items():
        cells = [_pm(e["per_class_ap"][c]) if c in e["per_class_ap"] else "—" for c in classes]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return lines


def _pm(stat: dict, scale: float = 100.0) -> str:
    if not stat["n"]:
        return "—"
    if stat["n"] == 1:  # one run: no spread to show
        return f"{stat['mean'] * scale:.1f}"
    return f"{stat['mean'] * scale:.1f} ± {stat['std'] * scale:.1f}"


def _interval(diff: dict, scale: float, digits: int) -> str:
    if diff["verdict"] == "n/a":
        return "—"
    return f"[{diff['low'] * scale:+.{digits}f}, {diff['high'] * scale:+.{digits}f}]"


def _num(value: Any, scale: float, digits: int) -> str:
    return "—" if value is None else f"{value * scale:.{digits}f}"
