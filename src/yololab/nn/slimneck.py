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

from .block import C2f
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
    """Dense conv to c2/2 channels plus a 5x5 depthwise conv of that, concatenated and shuffled (2 groups).

    Signature of the authors' ports, ``(c1, c2, k=1, s=1, g=1, act=True)``; ``g`` groups the dense conv.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool | nn.Module = True):
        super().__init__()
        if c2 % 2:
            raise ValueError(f"GSConv needs an even number of output channels, got c2={c2}")
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, g=g, act=act)
        self.cv2 = Conv(c_, c_, 5, 1, g=c_, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = self.cv1(x)
        return self.shuffle(torch.cat((dense, self.cv2(dense)), 1))

    @staticmethod
    def shuffle(x: torch.Tensor) -> torch.Tensor:
        """The ShuffleNet interleave of the paper's code and the authors' YOLOv8 port."""
        return channel_shuffle(x, 2)


@register("GSConv", layout="yolov5")
class GSConvV5(GSConv):
    """GSConv of the authors' YOLOv5 port: its channel order is [even channels, odd channels] of the concat."""

    @staticmethod
    def shuffle(x: torch.Tensor) -> torch.Tensor:
        """The YOLOv5 port's reshape-permute: even channels of ``[dense, depthwise]`` first, then the odd ones."""
        return torch.cat((x[:, 0::2], x[:, 1::2]), 1)


@register
class GSBottleneck(nn.Module):
    """GSConv(1x1) -> GSConv(k x k, linear), plus a linear 1x1 Conv shortcut; the two are summed.

    Signature ``(c1, c2, k=3, s=1, e=0.5)`` as in the authors' YOLOv5 port; the block keeps the size (``s`` = 1).
    """

    gsconv = GSConv

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, e: float = 0.5):
        super().__init__()
        if s != 1:
            raise ValueError(f"{type(self).__name__} keeps the map size: s must be 1, got {s}")
        c_ = _even(int(c2 * e), f"{type(self).__name__} hidden width")
        self.conv_lighting = nn.Sequential(self.gsconv(c1, c_, 1, 1), self.gsconv(c_, c2, self.lighting_k(k), 1,
                                                                                  act=False))
        self.shortcut = self._shortcut(c1, c2, k)

    @staticmethod
    def lighting_k(k: int) -> int:
        """Kernel of the second GSConv."""
        return k

    @staticmethod
    def _shortcut(c1: int, c2: int, k: int) -> nn.Module:
        return Conv(c1, c2, 1, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_lighting(x) + self.shortcut(x)


@register
class GSBottleneckC(GSBottleneck):
    """GS bottleneck with a cheap shortcut: a linear 3x3 depthwise conv (groups = gcd(c1, c2))."""

    @staticmethod
    def _shortcut(c1: int, c2: int, k: int) -> nn.Module:
        return DWConv(c1, c2, 3, 1, act=False)


@register("GSBottleneck", layout="yolov5")
class GSBottleneckV5(GSBottleneck):
    """The authors' YOLOv5-port GS bottleneck: its GSConvs (``GSConvV5``) and a 3x3 second GSConv whatever ``k``."""

    gsconv = GSConvV5

    @staticmethod
    def lighting_k(k: int) -> int:
        """The port builds the second GSConv 3x3 whatever ``k`` is."""
        return 3


@register("GSBottleneckC", layout="yolov5")
class GSBottleneckCV5(GSBottleneckV5):
    """The authors' YOLOv5-port cheap GS bottleneck: a linear k x k depthwise shortcut (``k`` = 1 in VoVGSCSPC)."""

    @staticmethod
    def _shortcut(c1: int, c2: int, k: int) -> nn.Module:
        return DWConv(c1, c2, k, 1, act=False)


@register(takes_repeats=True)
class VoVGSCSP(nn.Module):
    """CSP block aggregated once: 1x1 -> n GS bottlenecks, concatenated with a 1x1 cross-stage branch, 1x1 out.

    Signature of every public port, ``(c1, c2, n=1, shortcut=True, g=1, e=0.5)``; as there, ``shortcut`` and ``g``
    have no effect (every GS bottleneck has its shortcut). Hidden width ``c2 * e``.
    """

    bottleneck: type[GSBottleneck] = GSBottleneck
    bottleneck_args: dict = {"e": 1.0}

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        if n < 1:
            raise ValueError(f"{type(self).__name__} needs n >= 1 bottlenecks, got n={n}")
        c_ = _even(int(c2 * e), f"{type(self).__name__} hidden width")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.gsb = nn.Sequential(*(self.bottleneck(c_, c_, **self.bottleneck_args) for _ in range(n)))
        self.cv3 = Conv(2 * c_, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.cv2(x), self.gsb(self.cv1(x))), 1))


@register(takes_repeats=True)
class VoVGSCSPC(VoVGSCSP):
    """VoV-GSCSP whose bottlenecks use the cheap depthwise shortcut (GSBottleneckC)."""

    bottleneck = GSBottleneckC


@register("VoVGSCSP", layout="yolov5", takes_repeats=True)
class VoVGSCSPV5(VoVGSCSP):
    """VoV-GSCSP of the authors' YOLOv5 port (its GS bottlenecks, ``GSConvV5`` order).

    The port also builds a 3x3 conv ``res`` (``9 c_^2 + 2 c_`` params) that its forward never uses; it is not built
    here (``reference_extra_params`` counts it for ``yololab info``).
    """

    bottleneck = GSBottleneckV5

    def reference_extra_params(self) -> tuple[int, str]:
        """Params the port's code holds beyond this module (negative: fewer), and why."""
        c_ = self.cv1.conv.out_channels
        return 9 * c_ * c_ + 2 * c_, "unused 3x3 conv 'res' of the authors' YOLOv5 port"


@register("VoVGSCSPC", layout="yolov5", takes_repeats=True)
class VoVGSCSPCV5(VoVGSCSPV5):
    """VoV-GSCSPC of the authors' YOLOv5 port: n cheap GS bottlenecks ``GSBottleneckCV5(c_, c_, k=1, e=0.5)``.

    The port builds one such bottleneck whatever ``n`` is (``n`` honoured here) and the unused ``res`` conv.
    """

    bottleneck = GSBottleneckCV5
    bottleneck_args = {"k": 1, "e": 0.5}

    def reference_extra_params(self) -> tuple[int, str]:
        """The unused ``res`` conv, less the bottlenecks beyond the one the port builds whatever ``n`` is."""
        res, why = super().reference_extra_params()
        if len(self.gsb) == 1:
            return res, why
        missing = sum(p.numel() for block in self.gsb[1:] for p in block.parameters())
        return res - missing, f"{why}; it builds 1 of the n={len(self.gsb)} cheap bottlenecks"


@register("VoVGSCSP", layout="ultralytics", takes_repeats=True)
class VoVGSCSPV8(nn.Module):
    """VoV-GSCSP of the authors' YOLOv8 port, another block under the same name.

    A 1x1 conv into a C2f of ``n`` bottlenecks, and a 3x3 GSConv cross branch, concatenated, 1x1 out (``c_ = c2 * e``).

    The port builds its C2f with one bottleneck whatever ``n`` is (``n`` honoured here).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = _even(int(c2 * e), f"{type(self).__name__} hidden width")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.gc2 = GSConv(c1, c_, 3, 1)
        self.m = C2f(c_, c_, n, True)
        self.cv3 = Conv(2 * c_, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.gc2(x), self.m(self.cv1(x))), 1))

    def reference_extra_params(self) -> tuple[int, str]:
        """Params the port's code holds beyond this module: less the C2f bottlenecks beyond the one it builds."""
        c_ = self.cv1.conv.out_channels
        ours = sum(p.numel() for p in self.m.parameters())
        theirs = sum(p.numel() for p in C2f(c_, c_, 1, True).parameters())
        n = len(self.m.m)
        return theirs - ours, f"the authors' YOLOv8 port builds 1 of the n={n} C2f bottlenecks" if n > 1 else ""


@register("VoVGSCSPC", layout="ultralytics", takes_repeats=True)
class VoVGSCSPCV8(VoVGSCSPV8):
    """VoV-GSCSPC of the authors' YOLOv8 port, which computes exactly its VoV-GSCSP.

    The port also builds a GSBottleneckC that its forward never uses; it is not built here.
    """

    def reference_extra_params(self) -> tuple[int, str]:
        """The port's unused GSBottleneckC(c_, c_, 3, 1), less the C2f bottlenecks beyond the one it builds."""
        fewer, why = super().reference_extra_params()
        dead = _v8_cheap_bottleneck_params(self.cv1.conv.out_channels)
        return dead + fewer, "; ".join(w for w in ("unused GSBottleneckC 'gsb' of the authors' YOLOv8 port", why) if w)


def _v8_cheap_bottleneck_params(c: int) -> int:
    """Params of the YOLOv8 port's GSBottleneckC(c, c, 3, 1): GSConv(c, c/2, 1), GSConv(c/2, c, 3), 3x3 DW shortcut."""
    h, q = c // 2, c // 4
    gsconv_a = c * q + 2 * q + q * 25 + 2 * q          # 1x1 dense to c/4, 5x5 depthwise
    gsconv_b = h * h * 9 + 2 * h + h * 25 + 2 * h      # 3x3 dense to c/2, 5x5 depthwise
    return gsconv_a + gsconv_b + c * 9 + 2 * c          # depthwise 3x3 shortcut with BN


def _even(c: int, what: str) -> int:
    if c < 2 or c % 2:
        raise ValueError(f"{what} must be an even number >= 2 (GSConv halves it), got {c}")
    return c
