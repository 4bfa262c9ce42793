"""``yololab compare``: the comparison's settings turned into runs, a report and a JSON summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..api import command_dir
from ..cfg import ConfigError, Settings, defaults
from ..data import load_data_config
from ..engine.compare import RECIPE_KEYS, compare
from ..engine.trainer import resolve_lr0
from ..utils.dist import device_list


def compare_command(s: Settings) -> dict[str, Any]:
    """Run (or resume, or with ``report_only`` only report) the comparison that ``compare`` settings describe."""
    models = [m.strip() for m in str(s.models or "").split(",") if m.strip()]
    if len(models) < 2:
        raise ConfigError("compare needs models=baseline.yaml,variant.yaml[,...] (the first one is the baseline)")
    if s.optimizer == "auto":
        raise ConfigError("compare pins the recipe: choose optimizer=SGD or optimizer=AdamW, not auto")
    data = load_data_config(s.data)
    # every recipe value is passed explicitly, so the runs stay pinned even if a default changes later
    recipe = {k: s[k] if k in s else defaults()[k] for k in RECIPE_KEYS}
    recipe.update(data=s.data, patience=s.patience, plugins=s.plugins)
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
