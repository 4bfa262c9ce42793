"""Python API: ``YOLO("yolov8n.yaml")`` or ``YOLO("runs/train/weights/best.pt")``, and one function per command.

Each command function takes that command's typed settings (``cfg.settings(name, ...)``) and returns its result as a
JSON-able dict; the CLI adds argv parsing and printing, ``YOLO`` adds a model kept between calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .autoanchor import model_anchors
from .cfg import ConfigError, Settings, settings
from .cfg.recipe import family_overrides
from .checkpoint import load_checkpoint, model_from_checkpoint
from .data import check_data as check_dataset
from .data import convert as convert_dataset
from .data import load_data_config, load_image
from .engine.bench import bench as bench_model
from .engine.exporter import export as export_file
from .engine.openvino import OpenVinoModel, calibration_subset, export_openvino
from .engine.predictor import EXPORTED_SUFFIXES, as_inference_model
from .engine.predictor import predict as predict_source
from .engine.preprocess import check_imgsz
from .engine.trainer import Trainer, TrainingError
from .engine.validator import evaluate_files, validate
from .nn import DetectionModel
from .nn.registry import layout_registered, registered, torch_allowed
from .plugins import load_plugins
from .utils import dist
from .utils.files import run_dir
from .utils.profile import count_gflops, count_params
from .utils.threads import set_threads
from .utils.torch_utils import fused_copy, select_device


class YOLO:
    """A detector and the commands that act on it; ``.model`` is the ``nn.Module``."""

    def __init__(self, model: str | Path | dict | nn.Module = "yolov8n.yaml", nc: int | None = None,
                 plugins: str | list | None = None):
        if plugins:
            load_plugins(plugins)
        self.checkpoint: dict | None = None
        self.source = model if isinstance(model, (str, Path)) else None
        self.config = model if isinstance(model, dict) else None  # train() rebuilds it under the run's seed
        if isinstance(model, nn.Module):
            self.model = model
        elif str(model).endswith(".pt"):
            self.checkpoint = load_checkpoint(model)
            self.model = model_from_checkpoint(self.checkpoint, source=model)
        else:
            self.model = DetectionModel(model, nc=nc)

    @property
    def names(self) -> dict[int, str]:
        return self.model.names

    def info(self, imgsz: int = 640, verbose: bool = True) -> dict[str, Any]:
        """Layer table and totals: ``{"params", "gflops", "layers", "rows"}``; prints the table if verbose."""
        summary = model_summary(self.model, imgsz)
        if verbose:
            print(format_summary(summary))
        return summary

    def train(self, **kwargs: Any) -> dict[str, Any]:
        """Train this model with the keys of ``yololab train`` (unknown keys are errors); returns the final metrics.

        Afterwards ``.model`` holds the best weights (``best.pt``, else ``last.pt``) of the run.
        """
        source = {} if kwargs.get("resume") else {"model": str(self.source or "")}  # a resume keeps its own model
        s = settings("train", {**source, **kwargs}, where="YOLO.train")
        set_threads(s.threads)
        if len(dist.device_list(s.device)) > 1:
            raise ConfigError("multi-GPU training runs one process per GPU: use `yololab train ... device=0,1` "
                              "(or torchrun --nproc_per_node=N -m yololab train ...)")
        # A YAML source or config dict is rebuilt under the run's seed for the dataset's classes; loaded or given
        # modules train as they are.
        keep = self.source is None or self.checkpoint is not None
        model = (self.config or self.model) if keep and not kwargs.get("model") and not s.resume else None
        result = Trainer(s, model=model).train()
        weights = Path(result["save_dir"]) / "weights"
        best = weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
        self.checkpoint = load_checkpoint(best)
        self.model, self.source, self.config = model_from_checkpoint(self.checkpoint), best, None
        return result

    def predict(self, source: Any, stream: bool = False, **kwargs: Any):
        """Detect objects with the keys of ``yololab predict`` (``save`` defaults to False here).

        ``source``: image path, array (RGB), folder, glob, video, ``.txt`` list or a list of those.
        Returns a list of ``Results`` (``boxes.xyxy``, ``boxes.conf``, ``boxes.cls``, ``names``, ``plot()``),
        or a generator of them with ``stream=True``.
        """
        s = settings("predict", {"save": False, **kwargs}, where="YOLO.predict",
                     exclude=("model", "source", "nc", "plugins", "json"))
        set_threads(s.threads)
        return predict_source(self.model, source, stream=stream, **predict_kwargs(s))

    def val(self, **kwargs: Any) -> dict[str, Any]:
        """Validate with the keys of ``yololab val`` (``data=``, ``imgsz=``, ..., or ``gt=`` + ``pred=`` json files).

        Returns the metrics: map, map50, map75, aps/apm/apl, ars/arm/arl, precision, recall, per_class, speed_ms.
        """
        s = settings("val", kwargs, where="YOLO.val", exclude=("model", "nc", "plugins"))
        set_threads(s.threads)
        s = s.replace(model=str(self.source or ""))
        return validate_model(self.model, s, yaml_source=self.source if self.checkpoint is None else None)

    def export(self, **kwargs: Any) -> dict[str, Any]:
        """Export the fused model with the keys of ``yololab export``; returns file, max_abs_diff, opset, size_mb."""
        s = settings("export", kwargs, where="YOLO.export", exclude=("model", "nc", "plugins"))
        set_threads(s.threads)
        return export_model(self.model, s, source=self.source)

    def fuse(self) -> "YOLO":
        """Fold BatchNorms and re-parameterizable branches in place (eval-time equivalent)."""
        self.model.fuse()
        return self


# --- one function per command: typed settings in, a JSON-able result out


def info(s: Settings) -> dict[str, Any]:
    """``yololab info``: the layer table and totals of a model."""
    return YOLO(s.model, nc=s.nc).info(imgsz=s.imgsz, verbose=False)


def modules(s: Settings) -> dict[str, Any]:
    """``yololab modules``: every registered module with its description and build flags, and the torch allow-list."""
    specs = registered()
    flags = {n: "".join(f for f, on in (("c", sp.takes_c1), ("w", sp.scales_c2), ("n", sp.takes_repeats)) if on)
             for n, sp in specs.items()}
    return {"modules": {n: sp.description for n, sp in specs.items()}, "flags": flags, "torch": torch_allowed(),
            "layout_modules": {n: sp.description for n, sp in layout_registered().items()}}


def check_data(s: Settings) -> dict[str, Any]:
    """``yololab check-data``: images, boxes, object sizes and every problem of a dataset; with ``model=``, the best
    possible recall of its anchors on the boxes."""
    anchors = None
    if "model" in s.given:
        anchors = model_anchors(YOLO(s.model).model)
        if anchors is None:
            raise ConfigError(f"check-data model={s.model}: the model has no anchors (its head is anchor-free)")
    return check_dataset(s.data, imgsz=s.imgsz, anchors=None if anchors is None else anchors.view(-1, 2).numpy())


def convert(s: Settings) -> dict[str, Any]:
    """``yololab convert``: a dataset rewritten as YOLO txt, COCO json or VOC xml."""
    missing = [k for k in ("source", "to", "out") if not s[k]]
    if missing:
        raise ConfigError(f"'yololab convert' needs {', '.join(f'{k}=...' for k in missing)} "
                          "(source: data.yaml, COCO .json or VOC folder; to: yolo, coco or voc)")
    return convert_dataset(s.source, s.out, s.to, images=s.images)


def train(s: Settings) -> dict[str, Any] | None:
    """``yololab train``: one process, or (several devices) one torchrun process per device."""
    devices = dist.device_list(s.device)
    if len(devices) > 1 and dist.rank() < 0:  # start one process per device, then act as their launcher
        given = sorted(s.given)  # the others stay defaults there too (a resume keeps the checkpoint's)
        code = dist.launch_torchrun(["train", *(f"{k}={'' if s[k] is None else s[k]}" for k in given)], len(devices))
        if code:
            raise TrainingError(f"DDP training exited with code {code} (see the messages of its processes above)")
        return None
    return Trainer(s).train() or None


def predict(s: Settings) -> dict[str, Any]:
    """``yololab predict``: detect objects in every image/frame of ``source``; counts and mean speed."""
    model = s.model if s.model.endswith(EXPORTED_SUFFIXES) else YOLO(s.model, nc=s.nc).model
    kwargs = predict_kwargs(s)
    images = detections = 0
    speed: dict[str, float] = {}
    for result in predict_source(model, s.source, stream=True, verbose=s.verbose and not s.json, **kwargs):
        images, detections = images + 1, detections + len(result)
        for k, v in result.speed.items():
            speed[k] = speed.get(k, 0.0) + v
    save_dir = kwargs["save_dir"]
    return {"save_dir": None if save_dir is None else str(save_dir), "images": images, "detections": detections,
            "speed_ms": {k: round(v / max(images, 1), 2) for k, v in speed.items()}}


def export(s: Settings) -> dict[str, Any]:
    """``yololab export``: the fused model as ONNX or OpenVINO IR (float32, or INT8 with its val mAP beside float32's),
    checked against PyTorch."""
    yolo = YOLO(s.model, nc=s.nc)
    return export_model(yolo.model, s, source=yolo.source)


def bench(s: Settings) -> dict[str, Any]:
    """``yololab bench``: median and p90 latency of the fused model per format and device."""
    model = YOLO(s.model, nc=s.nc).model
    calibration = (calibration_subset(load_data_config(s.data).split("train"), s.calib_images)
                   if "data" in s.given else None)
    return bench_model(model, imgsz=check_imgsz(s.imgsz, int(max(model.stride))), batch=s.batch, formats=s.formats, runs=s.runs,
                       warmup=s.warmup, device=s.device, verbose=s.verbose and not s.json, calibration=calibration)


def val(s: Settings) -> dict[str, Any]:
    """``yololab val``: COCO metrics of a model on a dataset, or of a predictions json against a ground truth."""
    return validate_model(None, s)


# --- shared glue


def command_dir(s: Settings, default_name: str) -> Path:
    """The output folder of a command: ``project/name`` (default ``runs/<default_name>``), numbered unless exist_ok."""
    return run_dir(s.project, s.name or default_name, s.exist_ok)


def predict_kwargs(s: Settings) -> dict[str, Any]:
    """``predict`` settings -> keyword arguments of ``yololab.engine.predictor.predict``."""
    saving = s.save or s.save_txt or s.save_json
    return {"imgsz": s.imgsz, "conf": 0.25 if s.conf is None else s.conf, "iou": s.iou, "max_det": s.max_det,
            "slice": s.slice, "overlap": s.overlap, "slice_full": s.slice_full, "device": s.device, "half": s.half,
            "save": s.save, "save_txt": s.save_txt, "save_json": s.save_json, "compile": s.compile,
            "save_dir": command_dir(s, "predict") if saving else None}


def export_model(model: nn.Module, s: Settings, source: Any = None) -> dict[str, Any]:
    """Export with ``export`` settings; beside a ``.pt`` source, else into ``project/name`` (runs/export)."""
    suffix = ".onnx" if s.format == "onnx" else ".xml"
    src = Path(str(source)) if source else None
    if src is not None and src.suffix == ".pt":
        file = src.with_suffix(suffix)
    else:
        file = run_dir(s.project, s.name or "export", exist_ok=True) / f"{src.stem if src else 'model'}{suffix}"
    check_imgsz(s.imgsz, int(max(model.stride)))
    device = select_device(s.device or "cpu")
    if next(model.parameters()).device != device:
        model = fused_copy(model, fuse=False).to(device)
    image = load_image(s.source) if s.source else None
    verbose = s.verbose and not s.json
    if s.format == "onnx":
        if "data" in s.given:
            raise ConfigError("data= is for the OpenVINO formats (INT8 calibration and val mAP); drop it for onnx")
        return export_file(model, file, format=s.format, imgsz=s.imgsz, dynamic=s.dynamic, half=s.half,
                           simplify=s.simplify, opset=s.opset, image=image, verbose=verbose)
    if s.half:
        raise ConfigError("half=true exports float16 ONNX; OpenVINO IR is float32 (format=openvino-int8 for INT8)")
    int8 = s.format == "openvino-int8"
    if int8 and "data" not in s.given:
        raise ConfigError("format=openvino-int8 calibrates on training images: give data=<data.yaml> "
                          f"(calib_images={s.calib_images} of its train split are used)")
    data = load_data_config(s.data) if "data" in s.given else None
    calibration = calibration_subset(data.split("train"), s.calib_images) if int8 else None
    result = export_openvino(model, file, imgsz=s.imgsz, dynamic=s.dynamic, simplify=s.simplify, opset=s.opset,
                             image=image, calibration=calibration, load=load_image, verbose=verbose)
    return result if data is None else {**result, **exported_accuracy(result, data, s, verbose)}


def exported_accuracy(result: dict[str, Any], data: Any, s: Settings, verbose: bool) -> dict[str, Any]:
    """mAP50-95 and mAP50 on the val split of the float32 IR and (INT8 exports) of the INT8 IR, and the drop."""
    files = {"fp32": result.get("fp32_file", result["file"])}
    if result["format"] == "openvino-int8":
        files["int8"] = result["file"]
    scores = {}
    for precision, file in files.items():
        metrics = validate(OpenVinoModel(file), data, imgsz=s.imgsz, verbose=False)
        scores.update({f"{precision}_map": metrics["map"], f"{precision}_map50": metrics["map50"]})
    if "int8" in files:
        scores.update(int8_map_drop=round(100 * (scores["fp32_map"] - scores["int8_map"]), 2),
                      int8_map50_drop=round(100 * (scores["fp32_map50"] - scores["int8_map50"]), 2))
    if verbose:
        print(f"val mAP50-95 / mAP50 ({data.yaml_file or data.root}): "
              + "; ".join(f"{p} {scores[f'{p}_map']:.4f} / {scores[f'{p}_map50']:.4f}" for p in files)
              + (f"; INT8 drop {scores['int8_map_drop']:.2f} / {scores['int8_map50_drop']:.2f} points"
                 if "int8" in files else ""))
    return scores


def validate_model(model: nn.Module | None, s: Settings, yaml_source: Any = None) -> dict[str, Any]:
    """Run ``val`` settings: score ``gt=``/``pred=`` COCO json files, or validate a model on ``data``.

    ``model`` is a DetectionModel or None (load ``s.model``: a checkpoint, or a YAML built with the dataset's
    class count). A model built from ``yaml_source`` (random weights) is rebuilt when its class count differs.
    A PyTorch model of an anchor-based family is scored at its recipe's NMS IoU (0.6) unless ``iou=`` is given.
    """
    verbose = s.verbose and not s.json
    if s.gt or s.pred:
        both = sorted({"model", "data"} & s.given)
        if both:
            raise ConfigError(f"val scores either a model on a dataset (model=, data=) or a predictions json against "
                              f"a ground truth (gt=, pred=), not both: drop {' and '.join(f'{k}=' for k in both)} or "
                              "gt=/pred=")
        if not (s.gt and s.pred):
            raise ConfigError("scoring json files needs both gt=<instances.json> and pred=<predictions.json>")
        save_dir = command_dir(s, "val") if s.plots else None
        result = evaluate_files(s.gt, s.pred, save_dir=save_dir, plots=s.plots, verbose=verbose)
    else:
        data = load_data_config(s.data)
        if model is None and s.model.endswith(EXPORTED_SUFFIXES):
            model = as_inference_model(s.model, s.device or "cpu")
        elif model is None or (yaml_source is not None and getattr(model, "nc", data.nc) != data.nc):
            model = YOLO(yaml_source or s.model, nc=s.nc or data.nc).model
        iou = s.iou
        if isinstance(model, nn.Module):
            check_imgsz(s.imgsz, int(max(model.stride)))
            iou = family_overrides(getattr(model, "yaml", {}), s.given).get("iou", s.iou)  # anchor families: 0.6
            model = fused_copy(model)
        save_dir = command_dir(s, "val") if s.plots or s.save_json else None
        result = validate(model, data, imgsz=s.imgsz, batch=s.batch,
                          conf=0.001 if s.conf is None else s.conf, iou=iou, max_det=s.max_det, device=s.device,
                          split=s.split, save_dir=save_dir, plots=s.plots, save_json=s.save_json, workers=s.workers,
                          half=s.half, verbose=verbose, slice=s.slice, overlap=s.overlap, slice_full=s.slice_full)
    if verbose and save_dir is not None:
        print(f"results saved to {save_dir}")
    return {**result, "save_dir": None if save_dir is None else str(save_dir)}


def model_summary(model: DetectionModel, imgsz: int = 640) -> dict[str, Any]:
    """JSON-able summary of a DetectionModel: per-row table, parameter count and GFLOPs at ``imgsz``."""
    rows = [
        {"index": r.index, "from": r.source, "repeats": r.repeats, "module": r.module, "args": r.args,
         "params": r.params, "channels": r.channels}
        for r in model.info()
    ]
    return {
        "model": str(model.yaml.get("yaml_file", "")),
        "scale": model.yaml.get("scale"),
        "nc": model.nc,
        "imgsz": imgsz,
        "layers": len(rows),
        "params": count_params(model),
        "gflops": round(count_gflops(model, imgsz), 4),
        "strides": [int(s) for s in model.stride.tolist()],
        "layout": model.layout[0],
        "unused_rows": [{"index": r.index, "module": r.module, "params": r.params} for r in model.unused_rows()],
        "reference_differences": model.reference_differences(),
        "rows": rows,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The layer table as aligned text."""
    head = f"{'':>3} {'from':>14} {'n':>3} {'params':>10} {'out':>14}  {'module':<16} args"
    lines = [head]
    for r in summary["rows"]:
        lines.append(f"{r['index']:>3} {str(r['from']):>14} {r['repeats']:>3} {r['params']:>10,} "
                     f"{str(r['channels']):>14}  {r['module']:<16} {r['args']}")
    scale = f" (scale {summary['scale']})" if summary["scale"] else ""
    lines.append(f"{Path(summary['model']).name}{scale}: {summary['layers']} layers, {summary['params']:,} params, "
                 f"{summary['gflops']:.2f} GFLOPs at {summary['imgsz']}, strides {summary['strides']}")
    if summary["layout"] not in ("ultralytics", "yololab"):
        lines.append(f"rows read with {summary['layout']} signatures (docs/compatibility.md)")
    if summary["reference_differences"]:
        extra = sum(d["extra_params"] for d in summary["reference_differences"])
        why = sorted({d["why"] for d in summary["reference_differences"]})
        lines.append(f"the reference code of this file holds {summary['params'] + extra:,} params ({extra:+,}): "
                     f"{'; '.join(why)}; built here as the file means (no dead layers, n honoured)")
    for r in summary["unused_rows"]:
        lines.append(f"warning: row {r['index']} {r['module']} ({r['params']:,} params) feeds nothing: "
                     "built and counted in params, absent from the forward pass")
    return "\n".join(lines)
