"""Anchor-based YOLOv5 head: per level a 1x1 conv predicting (x, y, w, h, objectness, classes) for each prior box."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .registry import BuildContext, register


def _anchor_args(args: list, c_in: list[int], ctx: BuildContext) -> list:
    """YAML ``[nc, anchors]`` -> ``AnchorDetect(nc, anchors, ch)``; ``anchors`` is a per-level list or an int."""
    c_in = list(c_in) if isinstance(c_in, list) else [c_in]
    if len(args) != 2:
        raise ValueError(f"the anchor-based head takes [nc, anchors], got {args}")
    nc, anchors = args
    if isinstance(anchors, bool) or not isinstance(anchors, (int, list)):
        raise TypeError(f"anchors must be a per-level list of pixel (w, h) pairs or an int, got {anchors!r}")
    if isinstance(anchors, int):
        if anchors < 1:
            raise ValueError(f"anchors per level must be >= 1, got {anchors}")
        return [nc if nc is not None else ctx.nc, anchors, c_in]
    if len(anchors) != len(c_in):
        raise ValueError(f"{len(anchors)} anchor levels for {len(c_in)} head inputs")
    sizes = {len(level) if isinstance(level, list) else -1 for level in anchors}
    if len(sizes) != 1 or min(sizes) < 2 or min(sizes) % 2:
        raise ValueError(f"each anchor level must list the same even number of sizes (w1, h1, w2, h2, ...), "
                         f"got {anchors}")
    if not all(isinstance(v, (int, float)) and v > 0 for level in anchors for v in level):
        raise ValueError(f"anchor sizes must be positive numbers, got {anchors}")
    return [nc if nc is not None else ctx.nc, anchors, c_in]


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
        for conv, s in zip(self.m, self.stride.tolist()):
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
