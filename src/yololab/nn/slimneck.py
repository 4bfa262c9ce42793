"""Slim-neck modules: GSConv, GS bottlenecks and the VoV-GSCSP block (Li et al., arXiv 2206.02424).

GSConv spends a dense convolution on half of the output channels and a cheap 5x5 depthwise
convolution on the other half, then interleaves the two halves so that the depthwise features sit
next to the dense ones. VoV-GSCSP is a cross-stage-partial block whose bottlenecks are built from
GSConv. Attribute names (``cv1``/``cv2``/``cv3``/``gsb``, ``conv_lighting``/``shortcut``) follow the
authors' YOLOv5 layout. The shuffle is the ShuffleNet interleave of the paper's code and the authors'
YOLOv8 port (their YOLOv5 port orders channels differently, so its weights load but do not compute
the same function). Unlike the authors' code, no layer is built that the forward pass does not use,
and the repeat count ``n`` is honoured by every block.

Documentation: ``docs/modules/slimneck.md``.
"""

from __future__ import annotations

import torch
from torch import nn

from .conv import Conv, DWConv
from .registry import register


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: output channel ``i * groups + g`` is input channel ``g * (C // groups) + i``.

    Only reshapes and a transpose of the channel axes, with the batch axis kept first, so it exports
    to ONNX/TensorRT as plain Reshape/Transpose nodes.
    """
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible into {groups} groups")
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


@register
class GSConv(nn.Module):
    """Dense conv to c2/2 channels plus a 5x5 depthwise conv of that, concatenated and shuffled (2 groups)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: bool | nn.Module = True):
        super().__init__()
        if c2 % 2:
            raise ValueError(f"GSConv needs an even number of output channels, got c2={c2}")
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, act=act)
        self.cv2 = Conv(c_, c_, 5, 1, g=c_, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = self.cv1(x)
        return channel_shuffle(torch.cat((dense, self.cv2(dense)), 1), 2)


@register
class GSBottleneck(nn.Module):
    """GSConv(1x1) -> GSConv(k x k, linear), plus a linear 1x1 Conv shortcut; the two are summed."""

    def __init__(self, c1: int, c2: int, k: int = 3, e: float = 0.5):
        super().__init__()
        c_ = _even(int(c2 * e), "GSBottleneck hidden width")
        self.conv_lighting = nn.Sequential(GSConv(c1, c_, 1, 1), GSConv(c_, c2, k, 1, act=False))
        self.shortcut = self._shortcut(c1, c2)

    @staticmethod
    def _shortcut(c1: int, c2: int) -> nn.Module:
        return Conv(c1, c2, 1, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_lighting(x) + self.shortcut(x)


@register
class GSBottleneckC(GSBottleneck):
    """GS bottleneck with a cheap shortcut: a linear 3x3 depthwise conv (groups = gcd(c1, c2))."""

    @staticmethod
    def _shortcut(c1: int, c2: int) -> nn.Module:
        return DWConv(c1, c2, 3, 1, act=False)


@register(takes_repeats=True)
class VoVGSCSP(nn.Module):
    """CSP block aggregated once: 1x1 -> n GS bottlenecks, concatenated with a 1x1 cross-stage branch, 1x1 out."""

    bottleneck = GSBottleneck

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5):
        super().__init__()
        if n < 1:
            raise ValueError(f"{type(self).__name__} needs n >= 1 bottlenecks, got n={n}")
        c_ = _even(int(c2 * e), f"{type(self).__name__} hidden width")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.gsb = nn.Sequential(*(self.bottleneck(c_, c_, e=1.0) for _ in range(n)))
        self.cv3 = Conv(2 * c_, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.cv2(x), self.gsb(self.cv1(x))), 1))


@register(takes_repeats=True)
class VoVGSCSPC(VoVGSCSP):
    """VoV-GSCSP whose bottlenecks use the cheap depthwise shortcut (GSBottleneckC)."""

    bottleneck = GSBottleneckC


def _even(c: int, what: str) -> int:
    if c < 2 or c % 2:
        raise ValueError(f"{what} must be an even number >= 2 (GSConv halves it), got {c}")
    return c
