"""SPConv, "Split to Be Slim" (Zhang et al., IJCAI 2020), as drop-in YOLO modules.

The input channels are split into a representative part, which gets a k x k 2-group convolution
plus a 1x1 pointwise convolution, and a redundant part, which gets only a 1x1 convolution. Both
paths produce all output channels and are mixed per channel with parameter-free weights: a softmax
over the two paths of their globally average-pooled responses.

This file is named ``split_conv`` (not ``spconv``) to stay clear of the sparse-convolution library.
Differences from the reference code, on purpose: strided 1x1 paths use ceil-mode average pooling so
odd feature sizes give the same shape as the strided k x k conv; pooled statistics keep their
dimensions (batch size 1 works); the redundant 1x1 conv has no bias (the BatchNorm after it would
cancel it and it would never receive a gradient); channel splits are checked when built.

Documentation: ``docs/modules/spconv.md``.
"""

from __future__ import annotations

import torch
from torch import nn

from .block import Bottleneck, C2f
from .conv import Conv, fuse_conv_bn, resolve_act
from .registry import register


def split_channels(c1: int, ratio: float) -> tuple[int, int]:
    """(representative, redundant) input channels: ``c1 * ratio`` rounded to the nearest even count.

    The representative part must be even (its conv has 2 groups) and both parts non-empty.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"SPConv ratio must be in (0, 1), got {ratio}")
    if c1 < 3:
        raise ValueError(f"SPConv needs at least 3 input channels to split (2 representative + 1 redundant), "
                         f"got c1={c1}")
    c_rep = 2 * max(1, int(c1 * ratio / 2 + 0.5))
    c_rep = min(c_rep, (c1 - 1) // 2 * 2)
    return c_rep, c1 - c_rep


class SplitConv(nn.Module):
    """The SPConv operator: split input, two paths with their own BatchNorm, softmax-weighted sum."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, ratio: float = 0.5):
        super().__init__()
        if c2 % 2:
            raise ValueError(f"SPConv needs an even number of output channels (2-group conv), got c2={c2}")
        if k % 2 == 0:
            raise ValueError(f"SPConv needs an odd kernel size, got k={k}")
        self.c_rep, self.c_red = split_channels(c1, ratio)
        self.pool = nn.AvgPool2d(s, s, ceil_mode=True) if s > 1 else nn.Identity()
        self.gwc = nn.Conv2d(self.c_rep, c2, k, s, k // 2, groups=2, bias=False)
        self.pwc = nn.Conv2d(self.c_rep, c2, 1, bias=False)
        self.bn_rep = nn.BatchNorm2d(c2)
        self.conv_red = nn.Conv2d(self.c_red, c2, 1, bias=False)
        self.bn_red = nn.BatchNorm2d(c2)

    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(representative, redundant) responses, each (B, c2, H/s, W/s)."""
        x_rep, x_red = x.split((self.c_rep, self.c_red), 1)
        rep = self.bn_rep(self.gwc(x_rep) + self.pwc(self.pool(x_rep)))
        red = self.bn_red(self.conv_red(self.pool(x_red)))
        return rep, red

    @staticmethod
    def fusion_weights(rep: torch.Tensor, red: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-channel softmax over the two paths of their mean response: (B, 2, C, 1, 1)."""
        return torch.stack((rep.mean((2, 3), keepdim=True), red.mean((2, 3), keepdim=True)), 1).softmax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rep, red = self.paths(x)
        w = self.fusion_weights(rep, red)
        return w[:, 0] * rep + w[:, 1] * red

    def fuse(self) -> None:
        """Fold each path's BatchNorm into its convolutions (the data-dependent mixing stays)."""
        if isinstance(self.bn_rep, nn.Identity):
            return
        scale = self.bn_rep.weight / torch.sqrt(self.bn_rep.running_var + self.bn_rep.eps)
        self.gwc = fuse_conv_bn(self.gwc, self.bn_rep)
        with torch.no_grad():
            self.pwc.weight.mul_(scale.reshape(-1, 1, 1, 1))
        self.pwc.requires_grad_(False)
        self.conv_red = fuse_conv_bn(self.conv_red, self.bn_red)
        self.bn_rep, self.bn_red = nn.Identity(), nn.Identity()


@register
class SPConv(nn.Module):
    """SPConv used like a k x k ``Conv``: SplitConv -> BatchNorm -> SiLU. YAML args ``[c2, k, s, ratio]``."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, ratio: float = 0.5,
                 act: bool | str | nn.Module = True):
        super().__init__()
        self.conv = SplitConv(c1, c2, k, s, ratio)
        self.bn = nn.BatchNorm2d(c2)
        self.act = resolve_act(act, Conv.default_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SPBottleneck(Bottleneck):
    """Bottleneck whose two 3x3 convolutions are SPConv (residual when c1 == c2 and shortcut)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, ratio: float = 0.5):
        super().__init__(c1, c2, shortcut, e=e)
        c_ = int(c2 * e)
        self.cv1 = SPConv(c1, c_, 3, 1, ratio)
        self.cv2 = SPConv(c_, c2, 3, 1, ratio)


@register(takes_repeats=True)
class C2f_SPConv(C2f):  # noqa: N801  (YAML name)
    """C2f whose n bottlenecks use SPConv for both 3x3 convolutions. YAML args ``[c2, shortcut, e, ratio]``."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5, ratio: float = 0.5):
        super().__init__(c1, c2, n, shortcut, e=e)
        self.m = nn.ModuleList(SPBottleneck(self.c, self.c, shortcut, e=1.0, ratio=ratio) for _ in range(n))
