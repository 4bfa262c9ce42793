"""Module registry: every YAML module name maps to a class plus a declaration of how it is wired.

The parser never special-cases a class. Instead each registered module says:

- ``takes_c1``: the input channel count ``ch[from]`` is prepended to the YAML args;
- ``scales_c2``: the first YAML arg is an output width, scaled by the file's width multiple;
- ``takes_repeats``: the depth-scaled repeat count is inserted after ``c1, c2`` and the row is
  built once (otherwise ``repeats > 1`` builds an ``nn.Sequential`` of copies);
- ``out_channels(c_in, args)``: output channels of the row; when absent, a multi-output row's channels come
  from its ``feature_info`` and any other row's from ``scales_c2`` (its width) or its input;
- ``prepare(args, c_in, ctx)``: optional hook run after the default wiring, to rewrite the final
  constructor args (scale-dependent rules, heads that take the list of input channels).
- ``modern_head``: a model containing this module gets the YOLO11 class-branch layout in Detect.
- ``layout``: the module answers to its YAML name only in files of that layout (``yolov7``: YOLOv7's own
  training YAMLs; ``yolov5``: the YOLOv5 repository's), where the same name means another signature or block
  than in yololab's (Ultralytics-layout) files; see ``parse.model_layout``.

Backbone contract (as timm's ``feature_info``): a module whose forward returns a list of feature maps (RevCol,
RepViT, TimmBackbone, plug-in backbones) sets ``self.feature_info`` in ``__init__``: a list of ``FeatureInfo``,
one per returned map in order, giving its ``channels`` and ``stride`` (input pixels per output pixel). It is the
one source of the row's output channels; pick maps from such a row with ``Index``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

ChannelsFn = Callable[[Any, list], "int | list[int]"]


@dataclass(frozen=True)
class BuildContext:
    """What a ``prepare`` hook may read about the model being built."""

    scale: str | None
    depth: float
    width: float
    max_channels: int
    nc: int
    reg_max: int = 16
    legacy_head: bool = True
    layout: str = "ultralytics"

    def width_of(self, c: int) -> int:
        """Scale a nominal channel count like the YAML parser does: ceil(min(c, max) * width / 8) * 8."""
        return make_divisible(min(c, self.max_channels) * self.width, 8)

    def depth_of(self, n: int) -> int:
        """Scale a nominal repeat count: Python ``round`` (banker's), only when n > 1."""
        return max(round(n * self.depth), 1) if n > 1 else n


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map returned by a multi-output backbone: its channels and stride (reduction)."""

    channels: int
    stride: int


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x``."""
    return int(math.ceil(x / divisor) * divisor)


@dataclass
class ModuleSpec:
    """How one registered module is wired by the YAML parser."""

    name: str
    cls: type[nn.Module]
    takes_c1: bool = False
    scales_c2: bool = False
    takes_repeats: bool = False
    out_channels: ChannelsFn | None = None
    prepare: Callable[[list, Any, "BuildContext"], list] | None = None
    modern_head: bool = False
    description: str = ""
    layout: str | None = None

    def channels(self, c_in: Any, args: list, layer: nn.Module) -> int | list[int]:
        """Output channels of ``layer``, the row built with final constructor ``args`` from inputs ``c_in``."""
        if self.out_channels is not None:
            return self.out_channels(c_in, args)
        feature_info = getattr(layer, "feature_info", None)
        if feature_info is not None:
            if not (isinstance(feature_info, list) and feature_info
                    and all(isinstance(f, FeatureInfo) for f in feature_info)):
                raise ValueError(f"{self.name}.feature_info must be a non-empty list of "
                                 f"FeatureInfo(channels, stride), got {feature_info!r}")
            return [f.channels for f in feature_info]
        if self.scales_c2:
            return args[1] if self.takes_c1 else args[0]
        return c_in


_REGISTRY: dict[str, ModuleSpec] = {}
_LAYOUT_REGISTRY: dict[tuple[str, str], ModuleSpec] = {}


def register(
    name_or_cls: str | type | None = None,
    *,
    takes_c1: bool | None = None,
    scales_c2: bool | None = None,
    takes_repeats: bool = False,
    out_channels: ChannelsFn | None = None,
    prepare: Callable[[list, Any, "BuildContext"], list] | None = None,
    modern_head: bool = False,
    description: str | None = None,
    replace: bool = False,
    layout: str | None = None,
):
    """Register an ``nn.Module`` class for use in model YAML; usable as ``@register`` or ``@register(...)``.

    By default a module is wired like a convolution: ``takes_c1`` and ``scales_c2`` are True, so the
    YAML args are ``[c2, *rest]`` and the constructor is ``cls(c1, c2, *rest)``. With ``layout``, the class
    answers to the name only in model files of that layout (``get(name, layout)``).
    """

    def decorator(cls: type, name: str | None = None) -> type:
        key = name or cls.__name__
        table: dict = _REGISTRY if layout is None else _LAYOUT_REGISTRY
        slot = key if layout is None else (layout, key)
        if slot in table and not replace and table[slot].cls is not cls:
            raise ValueError(f"module '{key}' is already registered ({table[slot].cls.__module__}); "
                             "pass replace=True to override it")
        doc = (cls.__doc__ or "").strip().splitlines()
        table[slot] = ModuleSpec(
            name=key,
            cls=cls,
            takes_c1=True if takes_c1 is None else takes_c1,
            scales_c2=True if scales_c2 is None else scales_c2,
            takes_repeats=takes_repeats,
            out_channels=out_channels,
            prepare=prepare,
            modern_head=modern_head,
            description=description if description is not None else (doc[0] if doc else ""),
            layout=layout,
        )
        return cls

    if isinstance(name_or_cls, type):
        return decorator(name_or_cls)
    return lambda cls: decorator(cls, name_or_cls)


# torch.nn modules usable in YAML as ``nn.<Name>``: args are passed verbatim, channels unchanged.
_TORCH_ALLOWED = {
    "Upsample", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Identity", "ZeroPad2d",
    "Dropout", "ReLU", "SiLU", "GELU", "Hardswish", "LeakyReLU", "PixelShuffle", "PixelUnshuffle",
}


def get(name: str, layout: str | None = None) -> ModuleSpec:
    """Return the spec of a registered module (the ``layout``'s own one first), or raise ``KeyError`` with
    close-name suggestions."""
    if (layout, name) in _LAYOUT_REGISTRY:
        return _LAYOUT_REGISTRY[(layout, name)]
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("nn.") and name[3:] in _TORCH_ALLOWED:
        return _torch_spec(name[3:])
    if name == "nn.BatchNorm2d":
        return ModuleSpec(name=name, cls=nn.BatchNorm2d, takes_c1=True, description="torch BatchNorm2d")
    candidates = list(_REGISTRY) + [f"nn.{n}" for n in _TORCH_ALLOWED]
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(f"unknown module '{name}'.{hint} Register your own with @yololab.register in a file "
                   "passed as plugins=my_modules.py (see `yololab modules` for the list).")


def _torch_spec(name: str) -> ModuleSpec:
    cls = getattr(nn, name)
    out = None
    if name == "PixelShuffle":
        out = lambda c, a: c // (a[0] ** 2)  # noqa: E731
    elif name == "PixelUnshuffle":
        out = lambda c, a: c * (a[0] ** 2)  # noqa: E731
    return ModuleSpec(name=f"nn.{name}", cls=cls, takes_c1=False, scales_c2=False, out_channels=out,
                      description=f"torch.nn.{name} (args passed verbatim)")


def registered() -> dict[str, ModuleSpec]:
    """All registered modules by YAML name (torch.nn allow-list excluded)."""
    return dict(sorted(_REGISTRY.items()))


def layout_registered() -> dict[str, ModuleSpec]:
    """Modules whose YAML name means another signature in one file layout, keyed ``layout:name``."""
    return {f"{lay}:{name}": spec for (lay, name), spec in sorted(_LAYOUT_REGISTRY.items())}


def torch_allowed() -> list[str]:
    """The ``nn.*`` names a YAML may use."""
    return sorted(f"nn.{n}" for n in _TORCH_ALLOWED)
