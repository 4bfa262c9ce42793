"""Anchor-free decoupled detection head with Distribution Focal Loss decoding."""

from __future__ import annotations

import math

import torch
from torch import nn

from .conv import Conv, DWConv
from .registry import BuildContext, register


class DFL(nn.Module):
    """Expected value of a softmax over ``reg_max`` distance bins (a fixed, frozen 1x1 conv ramp)."""

    def __init__(self, c1: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats: list[torch.Tensor], strides: torch.Tensor, offset: float = 0.5):
    """Anchor centres (in grid units) and their strides for a list of feature maps."""
    points, stride_list = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for feat, stride in zip(feats, strides):
        h, w = feat.shape[2:]
        sy = torch.arange(h, device=device, dtype=dtype) + offset
        sx = torch.arange(w, device=device, dtype=dtype) + offset
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(stride), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(stride_list)


def dist2bbox(distance: torch.Tensor, anchors: torch.Tensor, xywh: bool = True, dim: int = -1) -> torch.Tensor:
    """Decode (left, top, right, bottom) distances around anchor points into boxes."""
    lt, rb = distance.chunk(2, dim)
    x1y1, x2y2 = anchors - lt, anchors + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


def bbox2dist(anchors: torch.Tensor, boxes_xyxy: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Encode xyxy boxes as (l, t, r, b) distances from anchors, clamped to the DFL range."""
    x1y1, x2y2 = boxes_xyxy.chunk(2, -1)
    return torch.cat((anchors - x1y1, x2y2 - anchors), -1).clamp_(0, reg_max - 1 - 0.01)


def _detect_args(args: list, c_in: list[int], ctx: BuildContext) -> list:
    if not isinstance(c_in, list):
        c_in = [c_in]
    if len(args) > 1:
        raise ValueError(f"the anchor-free Detect takes [nc], got {args}; the anchor-based head "
                         "`Detect, [nc, anchors]` needs a top-level 'anchors:' list (or an int) in the YAML")
    return [args[0] if args else ctx.nc, list(c_in), ctx.reg_max, ctx.legacy_head]


@register(takes_c1=False, scales_c2=False, prepare=_detect_args, out_channels=lambda c, a: 0)
class Detect(nn.Module):
    """Anchor-free decoupled head: a box branch (4 x reg_max DFL bins) and a class branch per level.

    Training mode returns the raw per-level maps; eval mode returns decoded predictions of shape
    ``(batch, 4 + nc, anchors)`` with boxes as centre-x, centre-y, width, height in input pixels.
    ``legacy=False`` selects the YOLO11 class branch (depthwise + pointwise pairs).
    """

    def __init__(self, nc: int = 80, ch: list[int] = (), reg_max: int = 16, legacy: bool = True):
        super().__init__()
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = reg_max
        self.no = nc + 4 * reg_max
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        c2 = max(16, ch[0] // 4, 4 * reg_max)
        c3 = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch
        )
        if legacy:
            self.cv3 = nn.ModuleList(
                nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch
            )
        else:
            self.cv3 = nn.ModuleList(
                nn.Sequential(
                    nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                    nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                    nn.Conv2d(c3, nc, 1),
                )
                for x in ch
            )
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        feats = [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]
        if self.training:
            return feats
        return self.decode(feats)

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Raw per-level maps -> (batch, 4 + nc, anchors) with xywh boxes in pixels and class scores."""
        b = feats[0].shape[0]
        anchors, strides = make_anchors(feats, self.stride)
        y = torch.cat([f.view(b, self.no, -1) for f in feats], 2)
        box, cls = y.split((4 * self.reg_max, self.nc), 1)
        boxes = dist2bbox(self.dfl(box), anchors.transpose(0, 1).unsqueeze(0), xywh=True, dim=1)
        return torch.cat((boxes * strides.transpose(0, 1), cls.sigmoid()), 1)

    def init_biases(self) -> None:
        """Box bias 2.0; class bias log(5 / nc / (640 / stride)^2): about 5 objects per 640 image."""
        for box_branch, cls_branch, s in zip(self.cv2, self.cv3, self.stride.tolist()):
            box_branch[-1].bias.data[:] = 2.0
            cls_branch[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)
