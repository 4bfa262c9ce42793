"""Anchor-based YOLOv5 head: per level a 1x1 conv predicting (x, y, w, h, objectness, classes) for each prior box."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .registry import BuildContext, register


def _anchor_args(args: list, c_in: list[int], ctx: BuildContext, levels: int | None = None) -> list:
    """YAML ``[nc, anchors]`` -> ``AnchorDetect(nc, anchors, ch)``; ``anchors`` is a per-level list or an int.

    ``levels``: how many of the inputs carry anchors (all by default)."""
    c_in = list(c_in) if isinstance(c_in, list) else [c_in]
    ch = c_in
    c_in = c_in[:levels]
    if len(args) != 2:
        raise ValueError(f"the anchor-based head takes [nc, anchors], got {args}")
    nc, anchors = args
    if isinstance(anchors, bool) or not isinstance(anchors, (int, list)):
        raise TypeError(f"anchors must be a per-level list of pixel (w, h) pairs or an int, got {anchors!r}")
    if isinstance(anchors, int):
        if anchors < 1:
            raise ValueError(f"anchors per level must be >= 1, got {anchors}")
        return [nc if nc is not None else ctx.nc, anchors, ch]
    if len(anchors) != len(c_in):
        raise ValueError(f"{len(anchors)} anchor levels for {len(c_in)} head inputs")
    sizes = {len(level) if isinstance(level, list) else -1 for level in anchors}
    if len(sizes) != 1 or min(sizes) < 2 or min(sizes) % 2:
        raise ValueError(f"each anchor level must list the same even number of sizes (w1, h1, w2, h2, ...), "
                         f"got {anchors}")
    if not all(isinstance(v, (int, float)) and v > 0 for level in anchors for v in level):
        raise ValueError(f"anchor sizes must be positive numbers, got {anchors}")
    return [nc if nc is not None else ctx.nc, anchors, ch]


@register(takes_c1=False, scales_c2=False, prepare=_anchor_args, out_channels=lambda c, a: 0)
class AnchorDetect(nn.Module):
    """YOLOv5 anchor-based head (also what ``Detect, [nc, anchors]`` builds when the YAML has ``anchors:``).

    ``anchors`` lists per level the prior sizes in input pixels (w1, h1, w2, h2, ...), or is an int (priors per level,
    computed by AutoAnchor before training). The buffer ``anchors`` (levels, na, 2) holds them in stride units once
    the strides are set. Training mode returns the raw per-level maps ``(B, na * (5 + nc), H, W)``; eval mode
    returns ``(batch, 4 + nc, boxes)`` like ``Detect``: xywh in input pixels and class scores = objectness x class
    probability.
    """

    def __init__(self, nc: int = 80, anchors: list[list[float]] | int = 3, ch: list[int] = ()):
        super().__init__()
        self.nc, self.no, self.nl = nc, nc + 5, len(ch)
        self.anchors_given = not isinstance(anchors, int)
        if isinstance(anchors, int):
            anchors = [[s for j in range(anchors) for s in (2.0 ** (1 + 2 * j / anchors),) * 2]] * self.nl
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float).view(self.nl, self.na, 2))
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in ch)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        feats = [conv(f) for conv, f in zip(self.m, x)]
        return feats if self.training else self.decode(feats)

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Raw maps -> (batch, 4 + nc, boxes): xy = (2 sigmoid - 0.5 + cell) * stride, wh = (2 sigmoid)^2 * anchor."""
        out = []
        for i, f in enumerate(feats):
            b, _, h, w = f.shape
            y = f.view(b, self.na, self.no, h, w).sigmoid()
            yy, xx = torch.meshgrid(torch.arange(h, device=f.device, dtype=y.dtype),
                                    torch.arange(w, device=f.device, dtype=y.dtype), indexing="ij")
            grid = torch.stack((xx, yy)).view(1, 1, 2, h, w)
            xy = (y[:, :, :2] * 2 - 0.5 + grid) * self.stride[i]
            wh = (y[:, :, 2:4] * 2) ** 2 * (self.anchors[i] * self.stride[i]).view(1, self.na, 2, 1, 1)
            scores = y[:, :, 5:] * y[:, :, 4:5]
            out.append(torch.cat((xy, wh, scores), 2).transpose(1, 2).reshape(b, 4 + self.nc, -1))
        return torch.cat(out, 2)

    def set_strides(self, strides: torch.Tensor) -> None:
        """Store the level strides, convert the anchors from pixels to stride units and check their order."""
        self.stride.copy_(strides)
        if not self.anchors_given:  # placeholders are already in stride units
            return
        self.anchors /= strides.view(-1, 1, 1).to(self.anchors)
        check_anchor_order(self)

    def init_biases(self) -> None:
        """Objectness prior of 8 objects per 640 image and class prior 0.6 / nc (YOLOv5's initialisation)."""
        self._prior_biases(self.m)

    def _prior_biases(self, convs: nn.ModuleList) -> None:
        for conv, s in zip(convs, self.stride.tolist()):
            b = conv.bias.data.view(self.na, self.no)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:] += math.log(0.6 / (self.nc - 0.99999))


def check_anchor_order(head: AnchorDetect) -> None:
    """Reverse the anchor levels (with a warning) when their sizes do not grow with the strides."""
    area = (head.anchors * head.stride.view(-1, 1, 1)).prod(-1).mean(-1)  # mean prior area per level, pixels^2
    area_step, stride_step = area[-1] - area[0], head.stride[-1] - head.stride[0]
    if area_step and stride_step and area_step.sign() != stride_step.sign():
        warnings.warn("anchor sizes shrink while strides grow: the anchor levels were reversed to follow the strides",
                      stacklevel=2)
        head.anchors[:] = (head.anchors * head.stride.view(-1, 1, 1)).flip(0) / head.stride.view(-1, 1, 1)


class ImplicitA(nn.Module):
    """YOLOR's implicit additive knowledge: a learned per-channel offset added to the input (zeros + N(0, 0.02))."""

    def __init__(self, channels: int):
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, channels, 1, 1).normal_(0.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """YOLOR's implicit multiplicative knowledge: a learned per-channel scale (ones + N(0, 0.02))."""

    def __init__(self, channels: int):
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, channels, 1, 1).normal_(1.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit * x


def fold_implicit(conv: nn.Conv2d, add: ImplicitA, mul: ImplicitM) -> None:
    """Fold ``mul(conv(add(x)))`` into ``conv`` in place: bias += W @ a, then weight and bias scaled by m."""
    with torch.no_grad():
        w = conv.weight
        bias = conv.bias + (w.sum((2, 3)) @ add.implicit.reshape(-1, 1)).view(-1)
        scale = mul.implicit.reshape(-1)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias.copy_(bias * scale)


@register(takes_c1=False, scales_c2=False, prepare=_anchor_args, out_channels=lambda c, a: 0)
class IDetect(AnchorDetect):
    """YOLOv7's anchor head: ``AnchorDetect`` with implicit knowledge, ``im(conv(ia(x)))`` per level.

    ``fuse()`` folds ``ia`` and ``im`` into the 1x1 convs (exact: the conv is linear), so the fused and exported head
    is a plain ``AnchorDetect``. Decoding, loss and AutoAnchor are the anchor-based YOLOv5 head's.
    """

    def __init__(self, nc: int = 80, anchors: list[list[float]] | int = 3, ch: list[int] = ()):
        super().__init__(nc, anchors, ch)
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch)
        self.im = nn.ModuleList(ImplicitM(self.na * self.no) for _ in ch)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        if self.ia is None:
            return super().forward(x)
        feats = [im(conv(ia(f))) for conv, ia, im, f in zip(self.m, self.ia, self.im, x)]
        return feats if self.training else self.decode(feats)

    def fuse(self) -> None:
        """Fold the implicit add / multiply into the output convs (eval outputs unchanged)."""
        if self.ia is None:
            return
        for conv, add, mul in zip(self.m, self.ia, self.im):
            fold_implicit(conv, add, mul)
        self.ia = self.im = None


def _aux_anchor_args(args: list, c_in: list[int], ctx: BuildContext) -> list:
    if not isinstance(c_in, list) or len(c_in) % 2:
        raise ValueError(f"IAuxDetect takes lead-head inputs followed by as many auxiliary inputs, got {c_in}")
    return _anchor_args(args, c_in, ctx, len(c_in) // 2)


@register(takes_c1=False, scales_c2=False, prepare=_aux_anchor_args, out_channels=lambda c, a: 0)
class IAuxDetect(IDetect):
    """YOLOv7's P6 head: the ``IDetect`` lead head on the first half of its inputs, plain 1x1 auxiliary heads
    (``m2``) on the second half.

    In training mode the output is the lead maps followed by the auxiliary maps, which the anchor loss trains with
    YOLOv7's lead-guided assignment (weight 0.25); inference, ``fuse()`` and export use the lead head only (``fuse()``
    drops ``m2``).
    """

    def __init__(self, nc: int = 80, anchors: list[list[float]] | int = 3, ch: list[int] = ()):
        levels = len(ch) // 2
        super().__init__(nc, anchors, ch[:levels])
        self.m2 = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in ch[levels:])

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        lead = super().forward(x[:self.nl])
        if not self.training or self.m2 is None:
            return lead
        return lead + [conv(f) for conv, f in zip(self.m2, x[self.nl:])]  # lead maps, then auxiliary maps

    def init_biases(self) -> None:
        """YOLOv5's bias priors for the lead and the auxiliary convs."""
        super().init_biases()
        self._prior_biases(self.m2)

    def set_strides(self, strides: torch.Tensor) -> None:
        """Strides of the lead levels (the auxiliary inputs repeat them)."""
        super().set_strides(strides[:self.nl])

    def fuse(self) -> None:
        """Fold the lead head's implicit knowledge and drop the auxiliary heads."""
        super().fuse()
        self.m2 = None
