"""The ``yololab`` commands: thin functions from merged settings to the engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cli import command
from .utils.files import run_dir as free_run_dir


def _load_model(settings: dict[str, Any]):
    from .api import YOLO

    return YOLO(settings["model"], nc=settings.get("nc"))


@command("info", ("model", "imgsz", "nc", "plugins"), "layer table, parameters and GFLOPs of a model")
def info(s: dict[str, Any]) -> dict:
    yolo = _load_model(s)
    summary = yolo.info(imgsz=int(s["imgsz"]), verbose=not s["json"])
    return summary


@command("modules", ("plugins",), "list the registered modules with a one-line description")
def modules(s: dict[str, Any]) -> dict:
    from .nn.registry import registered, torch_allowed

    specs = registered()
    if not s["json"]:
        width = max(len(n) for n in specs)
        for name, spec in specs.items():
            flags = "".join(f for f, on in (("c", spec.takes_c1), ("w", spec.scales_c2), ("n", spec.takes_repeats)) if on)
            print(f"{name:<{width}}  [{flags:<3}] {spec.description}")
        print(f"\ntorch.nn allow-list: {', '.join(torch_allowed())}")
        print("flags: c = takes input channels, w = first arg is a scaled width, n = takes the repeat count")
    return {"modules": {n: s.description for n, s in specs.items()}, "torch": torch_allowed()}


@command("check-data", ("data", "imgsz", "model", "plugins"),
         "images, boxes, object sizes and every problem of a dataset (with model=: how its anchors fit)")
def check_data(s: dict[str, Any]) -> dict:
    from .autoanchor import model_anchors
    from .cfg import ConfigError, given_keys
    from .data import check_data as check, format_check_report

    anchors = None
    if "model" in given_keys(s):
        anchors = model_anchors(_load_model(s).model)
        if anchors is None:
            raise ConfigError(f"check-data model={s['model']}: the model has no anchors (its head is anchor-free)")
    result = check(s["data"], imgsz=int(s["imgsz"]), anchors=None if anchors is None else anchors.view(-1, 2).numpy())
    if not s["json"]:
        print(format_check_report(result))
    return result


@command("convert", ("source", "to", "out", "images"), "convert a dataset between YOLO txt, COCO json and VOC xml")
def convert(s: dict[str, Any]) -> dict:
    from .cfg import ConfigError
    from .data import convert as run_convert

    missing = [k for k in ("source", "to", "out") if not s.get(k)]
    if missing:
        raise ConfigError(f"'yololab convert' needs {', '.join(f'{k}=...' for k in missing)} "
                          "(source: data.yaml, COCO .json or VOC folder; to: yolo, coco or voc)")
    result = run_convert(s["source"], s["out"], str(s["to"]), images=s.get("images"))
    if not s["json"]:
        counts = ", ".join(f"{k} {v['images']} images / {v['boxes']} boxes" for k, v in result["splits"].items())
        print(f"wrote {result['to']} dataset to {result['out']}: {counts}")
        for kind, n in result["problems"]["counts"].items():
            print(f"  {n} {kind}")
    return result



TRAIN_KEYS = ("model", "data", "imgsz", "plugins", "epochs", "batch", "device", "workers", "seed", "deterministic",
              "project", "name", "exist_ok", "pretrained", "resume", "optimizer", "lr0", "lrf", "momentum",
              "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr", "cos_lr", "nbs", "amp", "ema",
              "clip_grad", "patience", "close_mosaic", "cache", "sync_bn", "val", "save_period", "plots", "box", "cls",
              "dfl", "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
              "fliplr", "mosaic", "mixup")


@command("train", TRAIN_KEYS, "train a model (device=0,1 starts DDP through torchrun)")
def train(s: dict[str, Any]) -> dict | None:
    from .cfg import given_keys
    from .engine.trainer import Trainer
    from .utils import dist

    devices = dist.device_list(s["device"])
    if len(devices) > 1 and dist.rank() < 0:  # start one process per device, then act as their launcher
        given = sorted(given_keys(s))  # the others stay defaults there too (a resume keeps the checkpoint's)
        code = dist.launch_torchrun(["train", *(f"{k}={'' if s[k] is None else s[k]}" for k in given)], len(devices))
        if code:
            from .engine.trainer import TrainingError

            raise TrainingError(f"DDP training exited with code {code} (see the messages of its processes above)")
        return None
    return Trainer(s).train() or None


PREDICT_KEYS = ("model", "source", "imgsz", "conf", "iou", "max_det", "device", "half", "save", "save_txt",
                "save_json", "slice", "overlap", "slice_full", "project", "name", "exist_ok", "nc", "plugins")
EXPORT_KEYS = ("model", "format", "imgsz", "dynamic", "half", "simplify", "opset", "device", "source", "project",
               "name", "exist_ok", "nc", "plugins")
BENCH_KEYS = ("model", "imgsz", "batch", "formats", "runs", "warmup", "device", "nc", "plugins")


def run_dir(s: dict[str, Any], default_name: str) -> Path:
    """``project/name`` (default ``runs/<default_name>``), numbered ``name2``, ``name3``... unless exist_ok."""
    return free_run_dir(s.get("project"), s.get("name") or default_name, bool(s.get("exist_ok")))


def predict_kwargs(s: dict[str, Any]) -> dict[str, Any]:
    """Merged ``predict`` settings -> keyword arguments of ``yololab.engine.predictor.predict``."""
    saving = bool(s["save"] or s["save_txt"] or s["save_json"])
    return {"imgsz": int(s["imgsz"]), "conf": 0.25 if s["conf"] is None else float(s["conf"]), "iou": float(s["iou"]),
            "max_det": int(s["max_det"]), "slice": s["slice"], "overlap": float(s["overlap"]),
            "slice_full": bool(s["slice_full"]), "device": s["device"], "half": bool(s["half"]),
            "save": bool(s["save"]), "save_txt": bool(s["save_txt"]), "save_json": bool(s["save_json"]),
            "save_dir": run_dir(s, "predict") if saving else None}


@command("predict", PREDICT_KEYS, "detect objects in images, folders, globs, videos or .txt lists (slice= for tiles)")
def predict(s: dict[str, Any]) -> dict:
    from .engine.predictor import predict as run_predict

    model = s["model"] if str(s["model"]).endswith(".onnx") else _load_model(s).model
    kwargs = predict_kwargs(s)
    images = detections = 0
    speed: dict[str, float] = {}
    for result in run_predict(model, s["source"], stream=True, verbose=s["verbose"] and not s["json"], **kwargs):
        images, detections = images + 1, detections + len(result)
        for k, v in result.speed.items():
            speed[k] = speed.get(k, 0.0) + v
    speed = {k: round(v / max(images, 1), 2) for k, v in speed.items()}
    save_dir = kwargs["save_dir"]
    if not s["json"]:
        print(f"{images} images, {detections} detections; " + ", ".join(f"{v} ms {k}" for k, v in speed.items())
              + " per image" + (f"; results saved to {save_dir}" if save_dir else ""))
    return {"save_dir": None if save_dir is None else str(save_dir), "images": images, "detections": detections,
            "speed_ms": speed}


def export_model(model, s: dict[str, Any], source: Any = None) -> dict:
    """Export with merged ``export`` settings; beside a ``.pt`` source, else into ``project/name`` (runs/export)."""
    import copy

    from .data import load_image
    from .engine.exporter import export
    from .utils.torch_utils import select_device

    src = Path(str(source)) if source else None
    if src is not None and src.suffix == ".pt":
        file = src.with_suffix(".onnx")
    else:
        file = run_dir({**s, "exist_ok": True}, "export") / f"{src.stem if src else 'model'}.onnx"
    device = select_device(s["device"] or "cpu")
    if next(model.parameters()).device != device:
        model = copy.deepcopy(model).to(device)
    return export(model, file, format=str(s["format"]), imgsz=int(s["imgsz"]), dynamic=bool(s["dynamic"]),
                  half=bool(s["half"]), simplify=bool(s["simplify"]), opset=int(s["opset"]),
                  image=load_image(s["source"]) if s["source"] else None, verbose=s["verbose"] and not s["json"])


@command("export", EXPORT_KEYS, "export the fused model to ONNX and check it against PyTorch with onnxruntime")
def export(s: dict[str, Any]) -> dict:
    yolo = _load_model(s)
    return export_model(yolo.model, s, source=yolo.source)


@command("bench", BENCH_KEYS, "median and p90 latency of the fused model per format (torch, onnx) and device",
         defaults={"batch": 1})
def bench(s: dict[str, Any]) -> dict:
    from .engine.bench import bench as run_bench

    return run_bench(_load_model(s).model, imgsz=int(s["imgsz"]), batch=int(s["batch"]), formats=s["formats"],
                     runs=int(s["runs"]), warmup=int(s["warmup"]), device=s["device"],
                     verbose=s["verbose"] and not s["json"])


VAL_KEYS = ("model", "data", "imgsz", "batch", "conf", "iou", "max_det", "split", "save_json", "plots", "half",
            "device", "workers", "slice", "overlap", "slice_full", "gt", "pred", "project", "name", "exist_ok", "nc",
            "plugins")


def validate_model(model, s: dict[str, Any], yaml_source: Any = None) -> dict:
    """Run merged ``val`` settings: score ``gt=``/``pred=`` COCO json files, or validate a model on ``data``.

    ``model`` is a DetectionModel or None (load ``s["model"]``: a checkpoint, or a YAML built with the dataset's
    class count). A model built from ``yaml_source`` (random weights) is rebuilt when its class count differs.
    """
    import copy

    from .cfg import ConfigError
    from .engine.validator import evaluate_files, validate

    verbose = bool(s["verbose"]) and not s["json"]
    if s["gt"] or s["pred"]:
        if not (s["gt"] and s["pred"]):
            raise ConfigError("scoring json files needs both gt=<instances.json> and pred=<predictions.json>")
        save_dir = run_dir(s, "val") if s["plots"] else None
        result = evaluate_files(s["gt"], s["pred"], save_dir=save_dir, plots=bool(s["plots"]), verbose=verbose)
    else:
        from .data import load_data_config

        data = load_data_config(s["data"])
        if model is None or (yaml_source is not None and getattr(model, "nc", data.nc) != data.nc):
            model = _load_model({**s, "model": yaml_source or s["model"], "nc": s.get("nc") or data.nc}).model
        if callable(getattr(model, "fuse", None)):  # fold BatchNorms on a copy: same outputs, faster
            model = copy.deepcopy(model).eval().fuse()
        save_dir = run_dir(s, "val") if s["plots"] or s["save_json"] else None
        result = validate(model, data, imgsz=int(s["imgsz"]), batch=int(s["batch"]),
                          conf=0.001 if s["conf"] is None else float(s["conf"]), iou=float(s["iou"]),
                          max_det=int(s["max_det"]), device=s["device"], split=str(s["split"]), save_dir=save_dir,
                          plots=bool(s["plots"]), save_json=bool(s["save_json"]), workers=int(s["workers"]),
                          half=bool(s["half"]), verbose=verbose, slice=s["slice"], overlap=float(s["overlap"]),
                          slice_full=bool(s["slice_full"]))
    if verbose and save_dir is not None:
        print(f"results saved to {save_dir}")
    return {**result, "save_dir": None if save_dir is None else str(save_dir)}


@command("val", VAL_KEYS, "COCO mAP with APs/APm/APl, per-class table, PR/F1 curves, confusion matrix "
                          "(or score gt= pred= COCO json files)")
def val(s: dict[str, Any]) -> dict:
    return validate_model(None, s)


COMPARE_KEYS = ("models", "data", "seeds", "epochs", "imgsz", "batch", "nbs", "device", "workers", "project", "name",
                "exist_ok", "optimizer", "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_bias_lr",
                "cos_lr", "mosaic", "close_mosaic", "mixup", "patience", "amp", "plugins", "report_only")


@command("compare", COMPARE_KEYS, "train models x seeds under one pinned recipe; verdicts better/worse/within noise",
         defaults={"optimizer": "SGD"})
def compare(s: dict[str, Any]) -> dict:
    from .cfg import ConfigError, defaults
    from .data import load_data_config
    from .engine.compare import RECIPE_KEYS, compare as run_compare
    from .engine.trainer import resolve_lr0
    from .utils.dist import device_list

    models = [m.strip() for m in str(s["models"] or "").split(",") if m.strip()]
    if len(models) < 2:
        raise ConfigError("compare needs models=baseline.yaml,variant.yaml[,...] (the first one is the baseline)")
    if str(s["optimizer"]).lower() == "auto":
        raise ConfigError("compare pins the recipe: choose optimizer=SGD or optimizer=AdamW, not auto")
    data = load_data_config(s["data"])
    # every recipe value is passed explicitly, so the runs stay pinned even if a default changes later
    recipe = {k: s[k] if k in s else defaults()[k] for k in RECIPE_KEYS}
    recipe.update(data=s["data"], patience=s["patience"], plugins=s["plugins"])
    recipe["lr0"] = resolve_lr0(str(s["optimizer"]), recipe["lr0"])  # written out: the report shows the real value
    devices = [str(d) for d in device_list(s["device"])] if s["device"] not in (None, "", "cpu") else None
    # a named comparison reuses its folder, so running the same command again resumes it
    out = Path(s["project"] or "runs") / s["name"] if s["name"] else run_dir(s, "compare")
    seeds = list(range(int(s["seeds"])))
    log = (lambda msg: None) if s["json"] else print
    summary = run_compare(models, seeds, out, recipe, nc=data.nc, devices=devices, log=log,
                          report_only=bool(s["report_only"]))
    return {"out": summary["out"], "report": summary["report"], "baseline": summary["baseline"],
            "models": {m: {"cost": e["cost"], "runs": e["runs"], "failed": e["failed"],
                           "not_run": e["not_run"],
                           "metrics": {k: {"mean": v["mean"], "std": v["std"]} for k, v in e["metrics"].items()},
                           "vs_baseline": e["vs_baseline"]} for m, e in summary["models"].items()}}
