"""Network-level gradient-path designs: ELAN, ELAN-H, E-ELAN and the other YOLOv7 building blocks.

ELAN (Wang, Liao, Yeh, "Designing Network Design Strategies Through Gradient Path Analysis", 2022)
keeps both the shortest and the longest gradient path of a stage short by concatenating the outputs
of stacked computational blocks; YOLOv7 (Wang, Bochkovskiy, Liao, 2022) is built from it.

Our one-row blocks (``ELAN``, ``MPConv``, ...) take an ``act`` name (``yololab.nn.conv.ACTIVATIONS``) so that
YOLOv7-tiny's LeakyReLU(0.1) can be chosen per YAML row without touching ``Conv.default_act``. The second part of the
file is what YOLOv7's own training YAMLs use, with YOLOv7's signatures: ``MP``, ``SP``, ``ReOrg``, ``DownC``,
``Shortcut``, ``RepConv``, and, in files of the YOLOv7 layout (``parse.model_layout``), its ``Conv`` and ``SPPCSPC``.

Documentation: ``docs/modules/gradient-path.md``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .conv import Conv, autopad, fuse_conv_bn, resolve_act
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
class MPConv(nn.Module):
    """YOLOv7's whole downsampling transition (its "MP-1" rows) as one row: a max-pool and a stride-2 conv branch.

    Conv branch: 1x1 (``c2 / 2``) -> 3x3 stride 2; pool branch: 2x2 max-pool stride 2 -> 1x1
    (``c2 / 2``); output ``[conv branch, pool branch]`` as in YOLOv7. The pool uses ceil mode so both
    branches agree on odd sizes. (YOLOv7's own ``MP`` row is only the max-pool: ``MP`` below.)
    YAML args ``[c2, act]``.
    """

    def __init__(self, c1: int, c2: int, act: str = "silu"):
        super().__init__()
        if c2 % 2:
            raise ValueError(f"MPConv needs an even number of output channels, got {c2}")
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


# --- YOLOv7's own modules, with the signatures of its training YAMLs


@register("Conv", layout="yolov7")
class ConvV7(Conv):
    """YOLOv7's Conv: YAML args ``[c2, k, s, p, g, act]`` (no dilation; ``act`` True, False or ``nn.LeakyReLU(0.1)``).

    Only in files of the YOLOv7 layout; the module, state_dict and ``fuse()`` are those of ``Conv``.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True):
        super().__init__(c1, c2, k, s, p, g, 1, act)


@register("SPPCSPC", layout="yolov7", takes_repeats=True)
class SPPCSPCV7(SPPCSPC):
    """YOLOv7's SPPCSPC signature ``(c1, c2, n, shortcut, g, e, k)``; ``n``, ``shortcut`` and ``g`` are unused there too.

    Only in files of the YOLOv7 layout (YAML args ``[c2]``); the block is our ``SPPCSPC``, same state_dict names.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5,
                 k: Sequence[int] = (5, 9, 13)):
        super().__init__(c1, c2, k, e)


@register(takes_c1=False, scales_c2=False)
class MP(nn.MaxPool2d):
    """YOLOv7's ``MP``: a bare k x k max-pool of stride k (YAML args ``[]`` or ``[k]``), channels unchanged."""

    def __init__(self, k: int = 2):
        super().__init__(k, k)


@register(takes_c1=False, scales_c2=False)
class SP(nn.MaxPool2d):
    """YOLOv7's ``SP``: a k x k max-pool of stride s with 'same' padding (YAML args ``[k, s]``)."""

    def __init__(self, k: int = 3, s: int = 1):
        super().__init__(k, s, k // 2)


@register(takes_c1=False, scales_c2=False, out_channels=lambda c, a: 4 * c)
class ReOrg(nn.Module):
    """Space-to-depth stem of YOLOv7's P6 models: each 2x2 cell's pixels become channels (4c, half the size).

    Channel blocks in YOLOv7's order: (row 0, col 0), (row 1, col 0), (row 0, col 1), (row 1, col 1).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1)


@register(takes_repeats=True)
class DownC(nn.Module):
    """YOLOv7-E6/E6E downsampling: [1x1 -> 3x3 stride k (c2/2), k x k max-pool -> 1x1 (c2/2)] concatenated.

    YAML args ``[c2]`` (``n`` is inserted by the parser and unused, as in YOLOv7); the 1x1 keeps ``c1`` channels.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, k: int = 2):
        super().__init__()
        self.cv1 = Conv(c1, c1, 1, 1)
        self.cv2 = Conv(c1, c2 // 2, 3, k)
        self.cv3 = Conv(c1, c2 // 2, 1, 1)
        self.mp = nn.MaxPool2d(k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), 1)


@register(takes_c1=False, scales_c2=False, out_channels=lambda c, a: c[0])
class Shortcut(nn.Module):
    """Sum of two rows of equal shape (YOLOv7-E6E adds the outputs of two ELANs on the same input: E-ELAN's merge).

    YAML ``[[a, b], 1, Shortcut, [dim]]``; ``dim`` is accepted for YOLOv7's rows and unused.
    """

    def __init__(self, dimension: int = 0):
        super().__init__()

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return x[0] + x[1]


@register
class RepConv(nn.Module):
    """Re-parameterizable conv (RepVGG, as YOLOv7 uses it): k x k conv+BN, 1x1 conv+BN and, when shapes allow,
    an identity BN, summed, then the activation. ``fuse()`` folds all three into one k x k conv (same eval output).

    YAML args ``[c2, k, s, p, g, act]`` as YOLOv7's; state_dict names ``rbr_dense``, ``rbr_1x1``, ``rbr_identity``.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True):
        super().__init__()
        if k % 2 == 0:
            raise ValueError(f"RepConv needs an odd kernel to centre the 1x1 branch, got k={k}")
        pad = autopad(k, p)
        self.act = resolve_act(act, nn.SiLU())
        self.rbr_identity = nn.BatchNorm2d(c1) if c1 == c2 and s == 1 else None
        self.rbr_dense = nn.Sequential(nn.Conv2d(c1, c2, k, s, pad, groups=g, bias=False), nn.BatchNorm2d(c2))
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, pad - k // 2, groups=g, bias=False),
                                     nn.BatchNorm2d(c2))
        self.rbr_reparam: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rbr_reparam is not None:
            return self.act(self.rbr_reparam(x))
        identity = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x) + identity)

    def fuse(self) -> None:
        """Fold the three branches into ``rbr_reparam``, one k x k conv with bias (exact in eval mode)."""
        if self.rbr_reparam is not None:
            return
        dense = fuse_conv_bn(*self.rbr_dense)
        one = fuse_conv_bn(*self.rbr_1x1)
        k = dense.kernel_size[0]
        weight = dense.weight + nn.functional.pad(one.weight, [k // 2] * 4)
        bias = dense.bias + one.bias
        if self.rbr_identity is not None:
            per_group = dense.in_channels // dense.groups
            kernel = torch.zeros_like(dense.weight)
            kernel[torch.arange(dense.out_channels), torch.arange(dense.out_channels) % per_group, k // 2, k // 2] = 1
            identity = nn.Conv2d(dense.in_channels, dense.out_channels, k, 1, k // 2, groups=dense.groups, bias=False)
            identity.weight.data.copy_(kernel)
            folded = fuse_conv_bn(identity.to(kernel.device), self.rbr_identity)
            weight, bias = weight + folded.weight, bias + folded.bias
        with torch.no_grad():
            dense.weight.copy_(weight)
            dense.bias.copy_(bias)
        self.rbr_reparam = dense
        del self.rbr_dense, self.rbr_1x1
        self.rbr_identity = None
