"""Network-level gradient-path designs: ELAN, ELAN-H, E-ELAN and the other YOLOv7 building blocks.

ELAN (Wang, Liao, Yeh, "Designing Network Design Strategies Through Gradient Path Analysis", 2022)
keeps both the shortest and the longest gradient path of a stage short by concatenating the outputs
of stacked computational blocks; YOLOv7 (Wang, Bochkovskiy, Liao, 2022) is built from it.

Every module here takes an ``act`` name (``yololab.nn.conv.ACTIVATIONS``) so that YOLOv7-tiny's LeakyReLU(0.1) can
be chosen per YAML row without touching ``Conv.default_act``.

Documentation: ``docs/modules/gradient-path.md``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .conv import Conv
from .registry import BuildContext, register

def _scale_hidden(args: list, c_in: int, ctx: BuildContext) -> list:
    """The hidden width (constructor arg 3) scales with the model width exactly like the output width."""
    if len(args) < 3 or not isinstance(args[2], int):
        raise ValueError(f"expects [c2, hidden, ...] with an int hidden width, got {args[1:]}")
    args[2] = ctx.width_of(args[2])
    return args


def _check_counts(name: str, **counts: int) -> None:
    for key, value in counts.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} {key} must be a positive int, got {value!r}")


@register
class ConvAct(Conv):
    """Conv + BN + an activation chosen by name (e.g. ``leaky_relu`` for YOLOv7-tiny rows).

    YAML args ``[c2, k, s, act, g]``; state_dict layout and ``fuse()`` are those of ``Conv``.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: str = "silu", g: int = 1):
        super().__init__(c1, c2, k, s, g=g, act=act)


@register(prepare=_scale_hidden)
class ELAN(nn.Module):
    """Efficient layer aggregation: two 1x1 branches, stacked computational blocks, concat, 1x1 transition.

    ``cv1`` (short branch) and ``cv2`` (main branch) are 1x1 convs to ``hidden``; ``cv2`` feeds
    ``blocks`` computational blocks of ``convs_per_block`` 3x3 convs of width ``block_width``
    (default ``hidden``). Both branch outputs and every block output are concatenated newest first,
    ``[block_n, ..., block_1, main, short]`` as in YOLOv7, giving ``2 * hidden + blocks * block_width``
    channels, and ``cv3`` maps them to ``c2``. YAML args ``[c2, hidden, blocks, convs_per_block, act]``;
    ``hidden`` is width-scaled like ``c2``. YOLOv7's backbone ELAN is ``ELAN(c, 2c, c/2, 2, 2)``,
    YOLOv7-tiny's ``ELAN(c, 2c, c/2, 2, 1)``, YOLOv7-X's has 3 blocks.
    """

    def __init__(self, c1: int, c2: int, hidden: int, blocks: int = 2, convs_per_block: int = 2,
                 act: str = "silu", block_width: int | None = None):
        super().__init__()
        bw = hidden if block_width is None else block_width
        _check_counts(type(self).__name__, hidden=hidden, blocks=blocks, convs_per_block=convs_per_block,
                      block_width=bw)
        self.cv1 = Conv(c1, hidden, 1, act=act)
        self.cv2 = Conv(c1, hidden, 1, act=act)
        self.m = nn.ModuleList(
            nn.Sequential(*(Conv(hidden if i == j == 0 else bw, bw, 3, act=act)
                            for j in range(convs_per_block)))
            for i in range(blocks)
        )
        self.cv3 = Conv(2 * hidden + blocks * bw, c2, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x), self.cv2(x)]
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv3(torch.cat(y[::-1], 1))


@register("ELAN_H", prepare=_scale_hidden)
class ELANH(ELAN):
    """YOLOv7's head ELAN: every 3x3 conv (width ``hidden / 2``) is its own block and all outputs are concatenated.

    YAML args ``[c2, hidden, convs, act]``: ``[conv_n, ..., conv_1, main, short]`` has
    ``2 * hidden + convs * hidden / 2`` channels (4 convs: ``4 * hidden``), then a 1x1 to ``c2``.
    """

    def __init__(self, c1: int, c2: int, hidden: int, convs: int = 4, act: str = "silu"):
        if hidden % 2:
            raise ValueError(f"ELAN_H hidden width must be even, got {hidden}")
        super().__init__(c1, c2, hidden, convs, 1, act, block_width=hidden // 2)


@register(prepare=_scale_hidden)
class EELAN(nn.Module):
    """Extended ELAN as the YOLOv7 paper describes it: expand, shuffle and merge cardinality.

    Expand: the two 1x1 branches output ``groups * hidden`` channels and every 3x3 conv of the
    computational blocks is a group conv with ``groups`` groups at that width (``groups`` times the
    cardinality and channels of ELAN). Shuffle: the concatenated map ``[block_n, ..., main, short]``
    is regrouped into ``groups`` maps, each laid out like an ELAN concat (the i-th group of every
    part). Merge: the ``groups`` maps are added, and the 1x1 transition ``cv3`` is ELAN's, unchanged.
    With ``groups=1`` this is exactly ``ELAN`` (same state_dict). YAML args
    ``[c2, hidden, blocks, convs_per_block, groups, act]``.
    """

    def __init__(self, c1: int, c2: int, hidden: int, blocks: int = 2, convs_per_block: int = 2, groups: int = 2,
                 act: str = "silu"):
        super().__init__()
        _check_counts("EELAN", hidden=hidden, blocks=blocks, convs_per_block=convs_per_block, groups=groups)
        wide = groups * hidden
        self.hidden, self.groups = hidden, groups
        self.cv1 = Conv(c1, wide, 1, act=act)
        self.cv2 = Conv(c1, wide, 1, act=act)
        self.m = nn.ModuleList(
            nn.Sequential(*(Conv(wide, wide, 3, g=groups, act=act) for _ in range(convs_per_block)))
            for _ in range(blocks)
        )
        self.cv3 = Conv((2 + blocks) * hidden, c2, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x), self.cv2(x)]
        for block in self.m:
            y.append(block(y[-1]))
        y = torch.cat(y[::-1], 1)
        b, _, h, w = y.shape
        parts = 2 + len(self.m)
        shuffled = y.view(b, parts, self.groups, self.hidden, h, w).transpose(1, 2)  # (b, groups, parts, hidden)
        merged = shuffled.sum(1)
        return self.cv3(merged.reshape(b, parts * self.hidden, h, w))


@register(prepare=_scale_hidden)
class EELANSum(nn.Module):
    """E-ELAN as YOLOv7-E6E's code builds it: ``copies`` complete ELANs on the same input, outputs added.

    No group convolution and no shuffle; each copy has its own 1x1 transition. YAML args
    ``[c2, hidden, blocks, convs_per_block, copies, act]`` (E6E: 3 blocks of 2 convs, 2 copies).
    """

    def __init__(self, c1: int, c2: int, hidden: int, blocks: int = 3, convs_per_block: int = 2, copies: int = 2,
                 act: str = "silu"):
        super().__init__()
        _check_counts("EELANSum", copies=copies)
        self.m = nn.ModuleList(ELAN(c1, c2, hidden, blocks, convs_per_block, act) for _ in range(copies))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.m[0](x)
        for elan in self.m[1:]:
            out = out + elan(x)
        return out


@register
class MP(nn.Module):
    """YOLOv7's downsampling transition (its "MP-1" rows): a max-pool branch and a stride-2 conv branch.

    Conv branch: 1x1 (``c2 / 2``) -> 3x3 stride 2; pool branch: 2x2 max-pool stride 2 -> 1x1
    (``c2 / 2``); output ``[conv branch, pool branch]`` as in YOLOv7. The pool uses ceil mode so both
    branches agree on odd sizes. (YOLOv7's own ``MP`` layer is only the max-pool: ``nn.MaxPool2d``.)
    YAML args ``[c2, act]``.
    """

    def __init__(self, c1: int, c2: int, act: str = "silu"):
        super().__init__()
        if c2 % 2:
            raise ValueError(f"MP needs an even number of output channels, got {c2}")
        c_ = c2 // 2
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.cv1 = Conv(c1, c_, 1, act=act)
        self.cv2 = Conv(c1, c_, 1, act=act)
        self.cv3 = Conv(c_, c_, 3, 2, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cv3(self.cv2(x)), self.cv1(self.pool(x))), 1)


@register
class SPPCSPC(nn.Module):
    """Spatial pyramid pooling inside a CSP stage (YOLOv7's P5 neck entry).

    Main branch (``c_ = 2 * c2 * e`` channels): 1x1 ``cv1`` -> 3x3 ``cv3`` -> 1x1 ``cv4``; the map and
    its stride-1 max-pools (kernels ``k``) are concatenated -> 1x1 ``cv5`` -> 3x3 ``cv6``. Cross
    branch: 1x1 ``cv2`` of the input. ``cv7`` fuses ``[main, cross]`` to ``c2``. ``tiny=True`` drops
    ``cv3``, ``cv4`` and ``cv6`` (YOLOv7-tiny's SPP block). YAML args ``[c2, k, e, tiny, act]``.
    """

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13), e: float = 0.5, tiny: bool = False,
                 act: str = "silu"):
        super().__init__()
        if any(x % 2 == 0 for x in k):
            raise ValueError(f"SPPCSPC pooling kernels must be odd to keep the map size, got {list(k)}")
        c_ = int(2 * c2 * e)
        if c_ < 1:
            raise ValueError(f"SPPCSPC hidden width int(2 * {c2} * {e}) must be at least 1")

        def conv(c_in: int, c_out: int, kernel: int) -> Conv:
            return Conv(c_in, c_out, kernel, act=act)

        self.cv1 = conv(c1, c_, 1)
        self.cv2 = conv(c1, c_, 1)
        self.cv3 = nn.Identity() if tiny else conv(c_, c_, 3)
        self.cv4 = nn.Identity() if tiny else conv(c_, c_, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(x, 1, x // 2) for x in k)
        self.cv5 = conv((1 + len(k)) * c_, c_, 1)
        self.cv6 = nn.Identity() if tiny else conv(c_, c_, 3)
        self.cv7 = conv(2 * c_, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv4(self.cv3(self.cv1(x)))
        main = self.cv6(self.cv5(torch.cat([y] + [pool(y) for pool in self.m], 1)))
        return self.cv7(torch.cat((main, self.cv2(x)), 1))
