"""``yololab compare``: every model x every seed trained (or reused), then costs, verdicts, report and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..api import YOLO, command_dir
from ..cfg import ConfigError, Settings, defaults
from ..data import DataConfig, load_data_config, load_labels, unlabelled_split
from ..engine.preprocess import check_imgsz
from ..engine.trainer import resolve_lr0
from ..errors import UserError
from ..utils.dist import device_list
from ..utils.files import RunLock
from .costs import measure_costs
from .plots import write_plots
from .report import write_report
from .runner import RunFn, recipe_keys, run_all
from .statistics import analyse


def compare_command(s: Settings) -> dict[str, Any]:
    """Run (or resume, or with ``report_only`` only report) the comparison that ``compare`` settings describe."""
    models = [m.strip() for m in str(s.models or "").split(",") if m.strip()]
    if len(models) < 2:
        raise ConfigError("compare needs models=baseline.yaml,variant.yaml[,...] (the first one is the baseline)")
    if s.optimizer == "auto":
        raise ConfigError("compare pins the recipe: choose optimizer=SGD or optimizer=AdamW, not auto")
    data = load_data_config(s.data)
    if not s.report_only:
        check_before_training(models, data, s.imgsz)
    # every recipe value is passed explicitly, so the runs stay pinned even if a default changes later
    recipe = {k: s[k] if k in s else defaults()[k] for k in recipe_keys()}
    recipe["lr0"] = resolve_lr0(s.optimizer, recipe["lr0"])  # written out: the report shows the real value
    devices = [str(d) for d in device_list(s.device)] if s.device not in (None, "", "cpu") else None
    # a named comparison reuses its folder, so running the same command again resumes it
    out = Path(s.project or "runs") / s.name if s.name else command_dir(s, "compare")
    log = (lambda msg: None) if s.json else print
    summary = compare(models, list(range(s.seeds)), out, recipe, nc=data.nc, devices=devices, log=log,
                      report_only=s.report_only)
    return {"out": summary["out"], "report": summary["report"], "baseline": summary["baseline"],
            "models": {m: {"cost": e["cost"], "runs": e["runs"], "failed": e["failed"], "not_run": e["not_run"],
                           "metrics": {k: {"mean": v["mean"], "std": v["std"]} for k, v in e["metrics"].items()},
                           "vs_baseline": e["vs_baseline"]} for m, e in summary["models"].items()}}


def check_before_training(models: list[str], data: DataConfig, imgsz: int) -> None:
    """Build every model and read the dataset's labels once, so that a misspelt model, an imgsz that is not a
    multiple of a model's stride or an unlabelled split stops the comparison before its first run trains."""
    for model in models:
        check_imgsz(imgsz, int(max(YOLO(model, nc=data.nc).model.stride)), owner=f"{model}'s")
    for split in ("train", "val"):
        files = data.split(split)
        if not files:
            raise UserError(f"split '{split}' of {data.yaml_file or data.root} has no images")
        problem = unlabelled_split(*load_labels(files, data.nc))
        if problem:
            raise UserError(f"the {split} split of {data.yaml_file or data.root}: {problem}")


def compare(models: list[str], seeds: list[int], out: Path, recipe: dict, *, nc: int | None = None,
            devices: list[str] | None = None, run_fn: RunFn | None = None,
            log: Callable[[str], None] = print, report_only: bool = False) -> dict[str, Any]:
    """Run the whole comparison (or, with ``report_only``, only report the runs already finished) and write
    report.md/.csv/.json and plots into ``out``; returns the summary."""
    if len(models) < 2:
        raise UserError("compare needs at least two models (the first is the baseline)")
    with RunLock(out):  # one comparison writes a folder at a time
        return _compare(models, seeds, out, recipe, nc=nc, devices=devices, run_fn=run_fn, log=log,
                        report_only=report_only)


def _compare(models: list[str], seeds: list[int], out: Path, recipe: dict, *, nc: int | None,
             devices: list[str] | None, run_fn: RunFn | None, log: Callable[[str], None],
             report_only: bool) -> dict[str, Any]:
    log(f"comparing {len(models)} models x {len(seeds)} seeds into {out}; recipe: "
        + ", ".join(f"{k}={v}" for k, v in recipe.items()))
    results = run_all(models, seeds, out, recipe, run_fn=run_fn, devices=devices, log=log, report_only=report_only)
    costs = {m: measure_costs(m, int(recipe["imgsz"]), nc, log) for m in models}  # after training: a quiet CPU
    summary = analyse(results, models, costs)
    paths = write_report(summary, recipe, out, results)
    write_plots(summary, results, out)
    log(paths["md"].read_text())
    return {"out": str(out), "report": str(paths["md"]), **summary}
