"""Python API: ``YOLO("yolov8n.yaml")`` or ``YOLO("runs/train/weights/best.pt")``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .nn import DetectionModel
from .utils.profile import count_gflops, count_params


class YOLO:
    """A detector and the commands that act on it; ``.model`` is the ``nn.Module``."""

    def __init__(self, model: str | Path | dict | nn.Module = "yolov8n.yaml", nc: int | None = None,
                 plugins: str | list | None = None):
        if plugins:
            from .plugins import load_plugins

            load_plugins(plugins)
        self.checkpoint: dict | None = None
        self.source = model if isinstance(model, (str, Path)) else None
        if isinstance(model, nn.Module):
            self.model = model
        elif str(model).endswith(".pt"):
            from .checkpoint import load_checkpoint, model_from_checkpoint

            self.checkpoint = load_checkpoint(model)
            self.model = model_from_checkpoint(self.checkpoint)
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
        from .cfg import ConfigError, merge
        from .checkpoint import load_checkpoint, model_from_checkpoint
        from .cli import OUTPUT_KEYS
        from .commands import TRAIN_KEYS
        from .engine.trainer import Trainer
        from .utils.dist import device_list

        settings = merge({"model": str(self.source or ""), **kwargs}, TRAIN_KEYS + OUTPUT_KEYS,
                         where="YOLO.train")
        if len(device_list(settings["device"])) > 1:
            raise ConfigError("multi-GPU training runs one process per GPU: use `yololab train ... device=0,1` "
                              "(or torchrun --nproc_per_node=N -m yololab train ...)")
        # A YAML source is rebuilt for the dataset's classes; loaded or given modules train as they are.
        keep = self.source is None or self.checkpoint is not None
        model = self.model if keep and not kwargs.get("model") and not settings.get("resume") else None
        result = Trainer(settings, model=model).train()
        weights = Path(result["save_dir"]) / "weights"
        best = weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
        self.checkpoint = load_checkpoint(best)
        self.model, self.source = model_from_checkpoint(self.checkpoint), best
        return result

    def predict(self, source: Any, stream: bool = False, **kwargs: Any):
        """Detect objects with the keys of ``yololab predict`` (``save`` defaults to False here).

        ``source``: image path, array (RGB), folder, glob, video, ``.txt`` list or a list of those.
        Returns a list of ``Results`` (``boxes.xyxy``, ``boxes.conf``, ``boxes.cls``, ``names``, ``plot()``),
        or a generator of them with ``stream=True``.
        """
        from .cfg import merge
        from .commands import PREDICT_KEYS, predict_kwargs
        from .engine.predictor import predict

        keys = [k for k in PREDICT_KEYS if k not in ("model", "source", "nc", "plugins")]
        settings = merge({"save": False, **kwargs}, keys, where="YOLO.predict")
        return predict(self.model, source, stream=stream, **predict_kwargs(settings))

    def val(self, **kwargs: Any) -> dict[str, Any]:
        """Validate with the keys of ``yololab val`` (``data=``, ``imgsz=``, ..., or ``gt=`` + ``pred=`` json files).

        Returns the metrics: map, map50, map75, aps/apm/apl, ars/arm/arl, precision, recall, per_class, speed_ms.
        """
        from .cfg import merge
        from .cli import OUTPUT_KEYS
        from .commands import VAL_KEYS, validate_model

        keys = [k for k in VAL_KEYS if k not in ("model", "nc", "plugins")]
        settings = merge(kwargs, keys + list(OUTPUT_KEYS), where="YOLO.val")
        return validate_model(self.model, {**settings, "model": self.source, "nc": None},
                              yaml_source=self.source if self.checkpoint is None else None)

    def export(self, **kwargs: Any) -> dict[str, Any]:
        """Export the fused model with the keys of ``yololab export``; returns file, max_abs_diff, opset, size_mb."""
        from .cfg import merge
        from .cli import OUTPUT_KEYS
        from .commands import EXPORT_KEYS, export_model

        keys = [k for k in EXPORT_KEYS if k not in ("model", "nc", "plugins")] + list(OUTPUT_KEYS)
        return export_model(self.model, merge(kwargs, keys, where="YOLO.export"), source=self.source)

    def fuse(self) -> "YOLO":
        """Fold BatchNorms and re-parameterizable branches in place (eval-time equivalent)."""
        self.model.fuse()
        return self


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
    return "\n".join(lines)
