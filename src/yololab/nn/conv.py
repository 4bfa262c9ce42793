"""Convolution building blocks, activations and folding (Conv+BN, ``fuse_modules`` for a whole model)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .registry import register

ACTIVATIONS = {
    "silu": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "relu": nn.ReLU,
    "hardswish": nn.Hardswish,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def make_act(name: str) -> nn.Module:
    """A new activation module from its name; ``leaky_relu`` is LeakyReLU(0.1) as in YOLOv7-tiny."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def autopad(k: int | tuple, p: int | tuple | None = None, d: int = 1) -> int | list[int]:
    """'Same' padding for kernel ``k`` and dilation ``d`` when ``p`` is None."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new Conv2d equal to ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused = fused.to(conv.weight.device)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    fused.requires_grad_(False)
    return fused


def fuse_modules(root: nn.Module) -> None:
    """Call ``fuse()`` on the outermost modules that define it; a module's ``fuse()`` owns its subtree.

    Modules without ``fuse()`` are walked into; BatchNorms that no module knows how to fold stay as they are.
    """
    for child in root.children():
        if callable(getattr(child, "fuse", None)):
            child.fuse()
        else:
            fuse_modules(child)


@register
class Conv(nn.Module):
    """Conv2d + BatchNorm2d + SiLU, the basic YOLO convolution."""

    default_act = nn.SiLU()

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 d: int = 1, act: bool | str | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = resolve_act(act, self.default_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is None:
            return self.act(self.conv(x))
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution (eval-time equivalent)."""
        if self.bn is not None:
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = None


def resolve_act(act: bool | str | nn.Module | None, default: nn.Module) -> nn.Module:
    """The ``act`` argument of a conv module: True -> ``default``, False/None -> identity, a name ->
    ``make_act(name)``, a module as given."""
    if act is True:
        return default
    if act is False or act is None:
        return nn.Identity()
    if isinstance(act, str):
        return make_act(act)
    if isinstance(act, nn.Module):
        return act
    raise ValueError(f"act must be a bool, an activation name or a module, got {act!r}")


@register
class DWConv(Conv):
    """Depthwise Conv: groups = gcd(c1, c2)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1, act: bool | str | nn.Module = True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


def _concat_channels(c_in: list[int], args: list) -> int:
    return sum(c_in)


@register(takes_c1=False, scales_c2=False, out_channels=_concat_channels)
class Concat(nn.Module):
    """Concatenate a list of tensors along a dimension (channels by default)."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


def _index_channels(c_in: list[int], args: list) -> int:
    if not isinstance(c_in, list):
        raise ValueError("Index needs a multi-output row as input (from must point at a backbone row)")
    if not -len(c_in) <= args[0] < len(c_in):
        raise ValueError(f"Index {args[0]} out of range for a row with {len(c_in)} outputs")
    return c_in[args[0]]


@register(takes_c1=False, scales_c2=False, out_channels=_index_channels)
class Index(nn.Module):
    """Select one output of a multi-output row (e.g. P4 of a whole backbone): args ``[index]``."""

    def __init__(self, index: int = 0):
        super().__init__()
        self.index = index

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return x[self.index]
