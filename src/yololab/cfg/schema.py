"""Types, ranges and allowed values of the settings in ``default.yaml`` (which alone names keys and defaults).

A key without a rule here takes the type of its default (bool, int, float or str). ``Rule.check`` turns a user's
value into the typed value or raises ``ConfigError`` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError


class ConfigError(UserError):
    """An unknown or invalid setting given by the user."""


@dataclass(frozen=True)
class Rule:
    """What a key accepts: ``kind`` (bool, int, float, str, or any), bounds, choices, and whether empty is allowed."""

    kind: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    auto: bool = False  # the text "auto" is accepted too

    def check(self, key: str, value: Any) -> Any:
        if value is None:
            if self.optional:
                return None
            raise ConfigError(f"{key} needs a value ({self.describe()})")
        if self.auto and isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        typed = _cast(self.kind, value)
        if typed is _INVALID:
            raise ConfigError(f"{key}={value!r} is not valid: expected {self.describe()}")
        if self.choices:
            match = {c.lower(): c for c in self.choices}.get(str(typed).lower())
            if match is None:
                allowed = f"{', '.join(self.choices[:-1])} or {self.choices[-1]}" if len(self.choices) > 1 \
                    else self.choices[0]
                raise ConfigError(f"{key} must be {allowed}, got {value!r}")
            typed = match
        if (self.min is not None and typed < self.min) or (self.max is not None and typed > self.max):
            raise ConfigError(f"{key}={value!r} is out of range: expected {self.describe()}")
        return typed

    def describe(self) -> str:
        text = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a text",
                "any": "a value"}[self.kind]
        if self.min is not None and self.max is not None:
            text += f" from {self.min:g} to {self.max:g}"
        elif self.min is not None:
            text += f" >= {self.min:g}"
        if self.choices:
            text = f"one of {', '.join(self.choices)}"
        return text + (" or auto" if self.auto else "") + (" (or empty)" if self.optional else "")


_INVALID = object()


def _cast(kind: str, value: Any) -> Any:
    """``value`` as ``kind`` without losing information (1.5 is no int, 'abc' no number), else ``_INVALID``."""
    if kind == "any":
        return value
    if kind == "bool":
        return value if isinstance(value, bool) else _INVALID
    if isinstance(value, bool):
        return _INVALID if kind in ("int", "float") else str(value).lower()
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else _INVALID
    if kind == "float":
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else _INVALID
    return str(value) if isinstance(value, (str, int, float, Path)) else _INVALID  # str


def fraction(optional: bool = False) -> Rule:
    return Rule("float", 0.0, 1.0, optional=optional)


def non_negative() -> Rule:
    return Rule("float", 0.0)


def count(minimum: int = 1, optional: bool = False, auto: bool = False) -> Rule:
    return Rule("int", minimum, optional=optional, auto=auto)


RULES: dict[str, Rule] = {
    # shared
    "model": Rule("str"),
    "data": Rule("any"),  # a data.yaml path, `synthetic`, or (Python) a dict
    "imgsz": count(32),
    "plugins": Rule("any", optional=True),  # comma-separated text or (Python) a list
    "nc": count(1, optional=True),
    "batch": count(1),
    "device": Rule("str", optional=True),
    "workers": count(0),
    "threads": count(1, optional=True),
    "project": Rule("str", optional=True),
    "name": Rule("str", optional=True),
    "source": Rule("any", optional=True),  # path, glob, list or (Python) an array
    "conf": fraction(optional=True),
    "iou": fraction(),
    "max_det": count(1),
    "slice": count(32, optional=True),
    "overlap": Rule("float", 0.0, 0.95),
    # convert
    "to": Rule("str", choices=("yolo", "coco", "voc"), optional=True),
    "out": Rule("str", optional=True),
    "images": Rule("str", optional=True),
    # train
    "epochs": count(1),
    "seed": count(0),
    "pretrained": Rule("str", optional=True),
    "resume": Rule("any"),  # true/false or a path to last.pt
    "optimizer": Rule("str", choices=("SGD", "AdamW", "auto")),
    "lr0": Rule("float", 0.0, optional=True),
    "lrf": fraction(),
    "momentum": fraction(),
    "weight_decay": non_negative(),
    "warmup_epochs": non_negative(),
    "warmup_momentum": fraction(),
    "warmup_bias_lr": non_negative(),
    "nbs": count(1),
    "amp": Rule("str", choices=("auto", "true", "false", "bf16")),  # true/false: as before auto and bf16 existed
    "clip_grad": non_negative(),
    "patience": count(0),
    "close_mosaic": count(0),
    "cache": Rule("any", optional=True),  # ram (true means ram); the dataset checks it
    "save_period": Rule("int", -1),
    "box": non_negative(),
    "cls": non_negative(),
    "dfl": non_negative(),
    "obj": non_negative(),
    "anchor_t": Rule("float", 1.0),
    "fl_gamma": non_negative(),
    "label_smoothing": fraction(),
    "warmup_min_iters": count(0),
    "bn_calibration": count(0),
    "hsv_h": fraction(),
    "hsv_s": fraction(),
    "hsv_v": fraction(),
    "degrees": Rule("float", 0.0, 180.0),
    "translate": fraction(),
    "scale": fraction(),
    "shear": Rule("float", 0.0, 90.0),
    "perspective": Rule("float", 0.0, 0.001),
    "flipud": fraction(),
    "fliplr": fraction(),
    "mosaic": fraction(),
    "mixup": fraction(),
    # val
    "split": Rule("str", choices=("train", "val", "test")),
    "gt": Rule("str", optional=True),
    "pred": Rule("str", optional=True),
    # export / bench
    "format": Rule("str", choices=("onnx", "openvino", "openvino-int8")),
    "calib_images": count(1),
    "opset": count(7),
    "formats": Rule("any"),  # comma-separated text or (Python) a list
    "runs": count(1),
    "warmup": count(0),
    # compare
    "models": Rule("any", optional=True),  # comma-separated text or (Python) a list
    "seeds": count(1, auto=True),
    "margin": Rule("float", 0.001),
    "primary": Rule("str", choices=("map", "map50", "aps", "apm", "apl")),
    "max_seeds": count(3),
    "budget_hours": Rule("float", 0.0, optional=True),
    "executor": Rule("str", choices=("local", "ray")),
    "ray_address": Rule("str", optional=True),
    "cpus_per_run": count(1),
    "gpus_per_run": non_negative(),
    "max_retries": count(0),
}


def rule_for(key: str, default: Any) -> Rule:
    """The rule of ``key``: written in ``RULES``, else the type of its default."""
    if key in RULES:
        return RULES[key]
    kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(default), "any")
    return Rule(kind, optional=default is None)
