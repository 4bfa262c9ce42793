"""The ``yololab`` commands: thin functions from merged settings to the engines."""

from __future__ import annotations

from typing import Any

from .cli import command


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


@command("check-data", ("data", "imgsz"), "images, boxes, object sizes and every problem of a dataset")
def check_data(s: dict[str, Any]) -> dict:
    from .data import check_data as check, format_check_report

    result = check(s["data"], imgsz=int(s["imgsz"]))
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
    from .engine.trainer import Trainer
    from .utils import dist

    devices = dist.device_list(s["device"])
    if len(devices) > 1 and dist.rank() < 0:  # start one process per device, then act as their launcher
        code = dist.launch_torchrun(["train", *(f"{k}={'' if v is None else v}" for k, v in s.items())], len(devices))
        if code:
            raise RuntimeError(f"DDP training exited with code {code}")
        return None
    return Trainer(s).train() or None

