"""`yololab compare`: train every model with every seed under one pinned recipe and report what is noise.

Each (model, seed) run trains in its own subprocess (``python -m yololab train``), so a failing run is
reported without losing the others and memory is returned between runs. A finished run leaves
``result.json`` in its folder and is reused when the comparison is started again.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..checkpoint import load_checkpoint
from ..stats import paired_difference, summarize
from ..utils.files import to_jsonable, write_json
from ..utils.profile import machine_summary

ACCURACY_METRICS = ("map", "map50", "aps", "apm", "apl")
METRIC_LABELS = {"map": "mAP50-95", "map50": "mAP50", "aps": "APs", "apm": "APm", "apl": "APl"}
TRAINING_COSTS = ("epoch_time_s", "peak_rss_mb")  # lower is better
RECIPE_KEYS = ("epochs", "imgsz", "batch", "nbs", "optimizer", "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs",
               "warmup_bias_lr", "cos_lr", "mosaic", "close_mosaic", "mixup", "fliplr", "hsv_h", "hsv_s", "hsv_v",
               "translate", "scale", "box", "cls", "dfl", "amp", "workers", "deterministic")


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


NOT_RUN = "not run yet (report_only=true)"
RunFn = Callable[[str, int, Path, dict, "str | None"], dict]  # (model, seed, run dir, recipe, device)


def train_command(model: str, seed: int, run_dir: Path, recipe: dict) -> list[str]:
    """The ``yololab train`` arguments of one run: a resume of its ``last.pt`` when an earlier start of the same
    recipe was interrupted (killed, machine stopped), otherwise a fresh start (recorded in ``recipe.json``)."""
    last, started = run_dir / "weights" / "last.pt", run_dir / "recipe.json"
    if (last.is_file() and started.is_file() and json.loads(started.read_text()) == to_jsonable(recipe)
            and "optimizer" in load_checkpoint(last)):  # a finished run's last.pt has no training state
        return ["train", f"resume={last}", "json=true"]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(started, recipe, indent=1)
    args = [f"{k}={v}" for k, v in recipe.items() if v is not None]
    return ["train", f"model={model}", f"seed={seed}", f"project={run_dir.parent}", f"name={run_dir.name}",
            "exist_ok=true", "json=true", *args]


def train_subprocess(model: str, seed: int, run_dir: Path, recipe: dict, device: str | None = None) -> dict:
    """Train (or finish) one run via ``python -m yololab train ... json=true``; return its last JSON line."""
    cmd = [sys.executable, "-m", "yololab", *train_command(model, seed, run_dir, recipe)]
    if device is not None:
        cmd.append(f"device={device}")
    with open(run_dir / "compare.log", "w") as log, open(run_dir / "stdout.log", "w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=log, env=dict(os.environ))
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this run alone: its peak resident memory
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if proc.returncode != 0:
        tail = (run_dir / "compare.log").read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"exit code {proc.returncode}: {' | '.join(tail)}")
    lines = [ln for ln in stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("training printed no JSON result")
    result = json.loads(lines[-1])
    result.setdefault("peak_rss_mb", round(usage.ru_maxrss / 1024, 1))  # Linux reports KiB
    return result


def run_all(models: list[str], seeds: list[int], out: Path, recipe: dict, *, run_fn: RunFn | None = None,
            devices: list[str] | None = None, log: Callable[[str], None] = print,
            report_only: bool = False) -> list[RunResult]:
    """Run (or reuse) every model x seed, seed by seed (a partial comparison covers every model); with several
    devices, one run per device at a time, each run taking whichever device is free. ``report_only`` trains
    nothing: runs without a finished result come back as not run."""
    jobs = [(m, s) for s in seeds for m in models]
    devices = devices or [None]
    run_fn = run_fn or train_subprocess
    free: queue.Queue = queue.Queue()
    for device in devices:
        free.put(device)
    trained_s: list[float] = []  # wall time of each run trained by this call: the ETA of the ones left
    machine = machine_summary(load=False)
    recipe_json = to_jsonable(recipe)  # what a finished run's result.json holds

    def one(index_job):
        index, (model, seed) = index_job
        run_dir = out / "runs" / f"{_stem(model)}-seed{seed}"
        done = run_dir / "result.json"
        previous = json.loads(done.read_text()) if done.is_file() else None
        if previous is not None and previous.get("recipe") == recipe_json:
            log(f"[{index + 1}/{len(jobs)}] {_stem(model)} seed {seed}: reusing {done}")
            return RunResult(model, seed, True, previous["metrics"], run_dir=str(run_dir),
                             machine=previous.get("machine", ""))
        if report_only:
            log(f"[{index + 1}/{len(jobs)}] {_stem(model)} seed {seed}: {NOT_RUN}")
            return RunResult(model, seed, False, error=NOT_RUN, run_dir=str(run_dir))
        if previous is not None:
            log(f"[{index + 1}/{len(jobs)}] {_stem(model)} seed {seed}: the recipe changed since {done}, retraining")
        log(f"[{index + 1}/{len(jobs)}] {_stem(model)} seed {seed}: training")
        t0 = time.time()
        device = free.get()
        try:
            metrics = run_fn(model, seed, run_dir, recipe, device)
        except Exception as e:  # a failed run is reported, the others go on
            log(f"[{index + 1}/{len(jobs)}] {_stem(model)} seed {seed}: FAILED ({e})")
            return RunResult(model, seed, False, error=str(e), run_dir=str(run_dir))
        finally:
            free.put(device)
        metrics.setdefault("wall_time_s", round(time.time() - t0, 1))
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(done, {"recipe": recipe, "metrics": metrics, "machine": machine}, indent=1)
        trained_s.append(time.time() - t0)
        left = len(jobs) - index - 1
        eta = f"; about {_duration(sum(trained_s) / len(trained_s) * left / len(devices))} for the {left} left" \
            if left else ""
        log(f"[{index + 1}/{len(jobs)}] {_stem(model)} seed {seed}: done in {_duration(trained_s[-1])}, "
            + ", ".join(f"{METRIC_LABELS[k]} {metrics[k]:.3f}" for k in ("map", "map50") if k in metrics) + eta)
        return RunResult(model, seed, True, metrics, run_dir=str(run_dir), machine=machine)

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        return list(pool.map(one, enumerate(jobs)))


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _stem(model: str) -> str:
    return Path(model).stem


def analyse(results: list[RunResult], models: list[str], costs: dict[str, dict]) -> dict[str, Any]:
    """Per-model mean/std over seeds and paired differences against the first model (the baseline)."""
    by_model: dict[str, dict[int, dict]] = {m: {} for m in models}
    for r in results:
        if r.ok:
            by_model[r.model][r.seed] = r.metrics
    baseline = models[0]
    summary: dict[str, Any] = {"baseline": _stem(baseline), "models": {}}
    for model in models:
        runs = by_model[model]
        entry: dict[str, Any] = {"runs": len(runs),
                                 "failed": sum(r.model == model and not r.ok and r.error != NOT_RUN for r in results),
                                 "not_run": sum(r.model == model and r.error == NOT_RUN for r in results),
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
        summary["models"][_stem(model)] = entry
    return summary


def _per_seed(runs: dict[int, dict], metric: str) -> dict[int, float]:
    return {s: float(m[metric]) for s, m in runs.items() if m.get(metric) is not None}


def _stat(values: dict[int, float]) -> dict[str, Any]:
    s = summarize(list(values.values()))
    return {"mean": s.mean, "std": s.std, "n": s.n, "per_seed": values}


def write_report(summary: dict[str, Any], recipe: dict, out: Path, results: list[RunResult]) -> dict[str, Path]:
    """report.md, report.csv and report.json in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report.md", "csv": out / "report.csv", "json": out / "report.json"}
    write_json(paths["json"], {"summary": summary, "recipe": recipe, "runs": [r.__dict__ for r in results]}, indent=1)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "params", "gflops", "latency_ms", "onnx_latency_ms", "runs"]
                        + [f"{m}_{k}" for m in ACCURACY_METRICS for k in ("mean", "std", "diff", "low", "high",
                                                                           "verdict")]
                        + [f"{m}_{k}" for m in TRAINING_COSTS for k in ("mean", "std")])
        for name, e in summary["models"].items():
            row = [name, e["cost"].get("params"), e["cost"].get("gflops"), e["cost"].get("latency_ms"),
                   e["cost"].get("onnx_latency_ms"), e["runs"]]
            for m in ACCURACY_METRICS:
                stat, d = e["metrics"][m], e["vs_baseline"].get(m, {})
                row += [stat["mean"], stat["std"], d.get("mean"), d.get("low"), d.get("high"), d.get("verdict", "")]
            row += [e["metrics"][m][k] for m in TRAINING_COSTS for k in ("mean", "std")]
            writer.writerow(row)
    paths["md"].write_text(format_markdown(summary, recipe, results))
    return paths


def _pm(stat: dict, scale: float = 100.0) -> str:
    if not stat["n"]:
        return "—"
    if stat["n"] == 1:  # one run: no spread to show
        return f"{stat['mean'] * scale:.1f}"
    return f"{stat['mean'] * scale:.1f} ± {stat['std'] * scale:.1f}"


def format_markdown(summary: dict[str, Any], recipe: dict, results: list[RunResult]) -> str:
    """The table a user pastes into a paper, with verdicts and the recipe."""
    lines = [f"# Ablation report (baseline: {summary['baseline']})", "",
             "Accuracy in percent, mean ± sample std over seeds. Δ is the paired (same seed) difference to the "
             "baseline with its 95% t interval; the verdict is *better*/*worse* only when the whole interval is "
             "on one side of zero.", "",
             "| model | params (M) | GFLOPs | CPU ms (fused) | ONNX ms | runs | "
             + " | ".join(METRIC_LABELS[m] for m in ACCURACY_METRICS) + " |",
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(ACCURACY_METRICS)]
    for name, e in summary["models"].items():
        c = e["cost"]
        cells = [name, _num(c.get("params"), 1e-6, 2), _num(c.get("gflops"), 1, 2), _num(c.get("latency_ms"), 1, 1),
                 _num(c.get("onnx_latency_ms"), 1, 1), f"{e['runs']}" + (f" ({e['failed']} failed)" if e["failed"] else "")
                 + (f" ({e['not_run']} not run)" if e["not_run"] else "")]
        cells += [_pm(e["metrics"][m]) for m in ACCURACY_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Against the baseline", "",
              "| model | metric | Δ (points) | 95% interval | verdict |", "|---|---|---:|---|---|"]
    for name, e in summary["models"].items():
        for m, d in e["vs_baseline"].items():
            if m not in ACCURACY_METRICS:
                continue
            if not d["n"]:  # no seed run by both
                continue
            lines.append(f"| {name} | {METRIC_LABELS[m]} | {d['mean'] * 100:+.2f} | {_interval(d, 100, 2)} "
                         f"| {d['verdict']} |")
    lines += _training_cost_lines(summary) + _per_class_lines(summary)
    missing = [r for r in results if not r.ok]
    if missing:
        lines += ["", "## Runs without a result", ""] + [f"- {_stem(r.model)} seed {r.seed}: {r.error}" for r in missing]
    machines = Counter(r.machine or "not recorded" for r in results if r.ok)
    lines += ["", "## Machines", ""] + [f"- {m}: {n} run(s)" for m, n in machines.items()]
    if len(machines) > 1:
        lines += ["", "The same seed reproduces a run bit for bit only on the same hardware and software; runs from "
                  "different machines differ like different seeds do, so the intervals above include that noise."]
    lines += ["", "## Recipe (identical for every run)", "", "```"]
    lines += [f"{k}: {v}" for k, v in recipe.items()] + ["```", ""]
    return "\n".join(lines)


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


def _interval(diff: dict, scale: float, digits: int) -> str:
    return "—" if diff["verdict"] == "n/a" else f"[{diff['low'] * scale:+.{digits}f}, {diff['high'] * scale:+.{digits}f}]"


def _num(value: Any, scale: float, digits: int) -> str:
    return "—" if value is None else f"{value * scale:.{digits}f}"


def measure_costs(model: str, imgsz: int, nc: int | None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Params, GFLOPs and fused CPU latency (PyTorch and ONNX Runtime) of a model config at ``imgsz``."""
    from ..api import YOLO, model_summary
    from .bench import bench

    yolo = YOLO(model, nc=nc)
    summary = model_summary(yolo.model, imgsz)
    latency = {r["format"]: r.get("median_ms") for r in
               bench(yolo.model, imgsz=imgsz, runs=10, warmup=3, device="cpu", verbose=False)["results"]}
    cost = {"params": summary["params"], "gflops": summary["gflops"], "latency_ms": latency.get("torch"),
            "onnx_latency_ms": latency.get("onnx")}
    log(f"{_stem(model)}: {cost['params']:,} params, {cost['gflops']:.2f} GFLOPs, "
        f"{cost['latency_ms']:.1f} ms PyTorch / {cost['onnx_latency_ms']:.1f} ms ONNX Runtime (CPU, fused)")
    return cost


def write_plots(summary: dict[str, Any], results: list[RunResult], out: Path) -> list[Path]:
    """mAP50-95 vs GFLOPs and vs latency, per-metric bars, overlaid validation-mAP curves."""
    from ..plots import plot_curves, plot_metric_bars, plot_tradeoff

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
    curves: dict[str, list] = {}
    for r in results:
        csv_file = Path(r.run_dir) / "results.csv"
        if r.ok and csv_file.is_file():
            with open(csv_file) as f:
                rows = [row for row in csv.DictReader(f) if row.get("metrics/mAP50-95")]
            if rows:
                curves.setdefault(_stem(r.model), []).append(
                    ([int(row["epoch"]) for row in rows], [float(row["metrics/mAP50-95"]) for row in rows]))
    if curves:
        paths.append(plot_curves(curves, "epoch", "validation mAP50-95", out / "val_curves.png"))
    return paths


def compare(models: list[str], seeds: list[int], out: Path, recipe: dict, *, nc: int | None = None,
            devices: list[str] | None = None, run_fn: RunFn | None = None,
            log: Callable[[str], None] = print, report_only: bool = False) -> dict[str, Any]:
    """Run the whole comparison (or, with ``report_only``, only report the runs already finished) and write
    report.md/.csv/.json and plots into ``out``; returns the summary."""
    if len(models) < 2:
        raise ValueError("compare needs at least two models (the first is the baseline)")
    out.mkdir(parents=True, exist_ok=True)
    log(f"comparing {len(models)} models x {len(seeds)} seeds into {out}; recipe: "
        + ", ".join(f"{k}={v}" for k, v in recipe.items()))
    results = run_all(models, seeds, out, recipe, run_fn=run_fn, devices=devices, log=log, report_only=report_only)
    costs = {m: measure_costs(m, int(recipe["imgsz"]), nc, log) for m in models}  # after training: a quiet CPU
    summary = analyse(results, models, costs)
    paths = write_report(summary, recipe, out, results)
    write_plots(summary, results, out)
    log(paths["md"].read_text())
    return {"out": str(out), "report": str(paths["md"]), **summary}
