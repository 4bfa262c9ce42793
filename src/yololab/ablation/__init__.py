"""`yololab compare`: train every model with every seed under one pinned recipe and report what is noise.

The ablation layer sits on top of the api: ``runner`` trains (or reuses, or resumes) each run in its own process,
``costs`` measures params/GFLOPs/latency, ``statistics`` turns the runs into verdicts, ``report`` and ``plots``
write the results. Nothing below this package imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .costs import measure_costs
from .plots import write_plots
from .report import write_report
from .runner import RECIPE_KEYS, RunFn, RunResult, run_all
from .statistics import analyse

__all__ = ["RECIPE_KEYS", "RunResult", "compare"]


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
