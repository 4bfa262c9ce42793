"""``yololab compare``: every model x every seed trained (or reused), then costs, verdicts, report and plots."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..api import YOLO, command_dir
from ..cfg import ConfigError, Settings, defaults
from ..cfg.recipe import family_overrides
from ..data import DataConfig, YoloDataset, load_data_config, load_labels, unlabelled_split
from ..engine.preprocess import check_imgsz
from ..engine.trainer import resolve_lr0
from ..engine.validator import dataset_ground_truth
from ..errors import UserError
from ..nn import load_model_yaml
from ..utils.dist import device_list
from ..utils.files import RunLock
from .costs import measure_costs
from .plots import write_plots
from .report import write_report
from .runner import RunFn, recipe_keys, run_all
from .sequential import planned_looks, run_sequential
from .statistics import RunResult, analyse


def val_ground_truth(data: DataConfig) -> dict | None:
    """The val split's COCO ground truth (what the runs' kept predictions refer to), or None without a val split."""
    files = data.split("val")
    if not files:
        return None
    return dataset_ground_truth(YoloDataset(files, rect=True, nc=data.nc).labels, data, "val")[0]


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
    family_recipes = {m: family_recipe(m, s.given) for m in models}
    devices = [str(d) for d in device_list(s.device)] if s.device not in (None, "", "cpu") else None
    # a named comparison reuses its folder, so running the same command again resumes it
    out = Path(s.project or "runs") / s.name if s.name else command_dir(s, "compare")
    log = (lambda msg: None) if s.json else print
    plan = SeedPlan(seeds=s.seeds, max_seeds=s.max_seeds, budget_hours=s.budget_hours)
    executor = ray_executor(s, out, devices)
    with executor or nullcontext():
        summary = compare(models, plan, out, recipe, nc=data.nc, devices=devices, run_fn=executor,
                          parallel=executor.parallel if executor else 1, log=log, report_only=s.report_only,
                          margin=s.margin, primary=s.primary, ground_truth=val_ground_truth(data),
                          family_recipes={m: r for m, r in family_recipes.items() if r})
    return {"out": summary["out"], "report": summary["report"], "baseline": summary["baseline"],
            "settings": summary["settings"],
            "models": {m: {"cost": e["cost"], "runs": e["runs"], "failed": e["failed"], "not_run": e["not_run"],
                           "metrics": {k: {"mean": v["mean"], "std": v["std"]} for k, v in e["metrics"].items()},
                           "vs_baseline": e["vs_baseline"]} for m, e in summary["models"].items()}}


RAY_KEYS = ("ray_address", "cpus_per_run", "gpus_per_run", "max_retries", "ray_fetch_weights")


def ray_executor(s: Settings, out: Path, devices: list[str] | None):
    """The Ray executor that ``executor=ray`` asks for (None for the local one, or when nothing trains): only
    then is ``ray_executor`` (and Ray) imported."""
    if s.executor != "ray":
        given = [k for k in RAY_KEYS if k in s.given]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to executor=ray (this comparison runs locally)")
        return None
    if devices:
        raise ConfigError(f"device={s.device} picks this machine's devices; with executor=ray each run asks Ray "
                          "for gpus_per_run=N GPUs instead")
    if s.report_only:
        return None
    from .ray_executor import RayExecutor

    return RayExecutor(out, address=s.ray_address, cpus_per_run=s.cpus_per_run, gpus_per_run=s.gpus_per_run,
                       max_retries=s.max_retries, fetch_weights=s.ray_fetch_weights)


def family_recipe(model: str, given: frozenset[str]) -> dict[str, Any]:
    """The settings of ``model``'s family recipe (``cfg/recipes/``) that the user did not set: what this model
    trains with instead of the comparison's common recipe (empty for the anchor-free families)."""
    return family_overrides(load_model_yaml(model), given)


@dataclass(frozen=True)
class SeedPlan:
    """How many seeds: a fixed number, or ``"auto"`` (rounds up to ``max_seeds`` within ``budget_hours``)."""

    seeds: int | str = 3
    max_seeds: int = 10
    budget_hours: float | None = None


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


def compare(models: list[str], plan: SeedPlan | list[int], out: Path, recipe: dict, *, nc: int | None = None,
            devices: list[str] | None = None, run_fn: RunFn | None = None, parallel: int = 1,
            log: Callable[[str], None] = print, report_only: bool = False, margin: float = 1.0, primary: str = "map",
            ground_truth: dict | None = None, family_recipes: dict[str, dict] | None = None) -> dict[str, Any]:
    """Run the whole comparison (or, with ``report_only``, only report the runs already finished) and write
    report.md/.csv/.json and plots into ``out``; returns the summary. ``plan`` may also be a list of seeds.
    ``ground_truth`` (the val split's COCO dict) turns on the image bootstrap for runs that kept predictions;
    ``parallel`` runs train at once when no ``devices`` are given (see ``run_all``)."""
    if len(models) < 2:
        raise UserError("compare needs at least two models (the first is the baseline)")
    plan = SeedPlan(seeds=len(plan)) if isinstance(plan, list) else plan
    with RunLock(out):  # one comparison writes a folder at a time
        return _compare(models, plan, out, recipe, nc=nc, devices=devices, run_fn=run_fn, parallel=parallel,
                        log=log, report_only=report_only, margin=margin, primary=primary, ground_truth=ground_truth,
                        family_recipes=family_recipes)


def _compare(models: list[str], plan: SeedPlan, out: Path, recipe: dict, *, nc: int | None,
             devices: list[str] | None, run_fn: RunFn | None, parallel: int, log: Callable[[str], None],
             report_only: bool, margin: float, primary: str, ground_truth: dict | None,
             family_recipes: dict[str, dict] | None) -> dict[str, Any]:
    log(f"comparing {len(models)} models x {plan.seeds} seeds into {out}; recipe: "
        + ", ".join(f"{k}={v}" for k, v in recipe.items()))
    for model, overlay in (family_recipes or {}).items():
        log(f"{model} trains with its family's recipe for {', '.join(f'{k}={v}' for k, v in overlay.items())}")

    def train(round_models: list[str], seeds: list[int]) -> list[RunResult]:
        return run_all(round_models, seeds, out, recipe, run_fn=run_fn, devices=devices, parallel=parallel, log=log,
                       report_only=report_only, family_recipes=family_recipes)

    def look(results: list[RunResult], looks: int) -> dict[str, Any]:
        return analyse(results, models, {}, margin=margin, primary=primary, looks=looks, ground_truth=ground_truth)

    if plan.seeds == "auto":
        budget_s = plan.budget_hours * 3600 if plan.budget_hours is not None else None
        results, _, seeds_used = run_sequential(models, plan.max_seeds, train, look, primary=primary,
                                                budget_s=budget_s, log=log)
        looks = planned_looks(plan.max_seeds)
    else:
        results, seeds_used, looks = train(models, list(range(plan.seeds))), None, 1
    costs = {m: measure_costs(m, int(recipe["imgsz"]), nc, log) for m in models}  # after training: a quiet CPU
    summary = analyse(results, models, costs, margin=margin, primary=primary, looks=looks,
                      ground_truth=ground_truth)
    summary["settings"]["seeds"] = plan.seeds
    if seeds_used is not None:
        summary["settings"].update(max_seeds=plan.max_seeds, budget_hours=plan.budget_hours, seeds_used=seeds_used)
    paths = write_report(summary, recipe, out, results, family_recipes)
    write_plots(summary, results, out)
    log(paths["md"].read_text())
    return {"out": str(out), "report": str(paths["md"]), **summary}
