"""Box operations shared by the loss, the validator and the predictor."""

from __future__ import annotations

import math

import torch


def xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    """Centre-x, centre-y, width, height -> x1, y1, x2, y2 (last dimension)."""
    xy, wh = x[..., :2], x[..., 2:4] / 2
    return torch.cat((xy - wh, xy + wh), -1)


def xyxy2xywh(x: torch.Tensor) -> torch.Tensor:
    """x1, y1, x2, y2 -> centre-x, centre-y, width, height (last dimension)."""
    return torch.cat(((x[..., :2] + x[..., 2:4]) / 2, x[..., 2:4] - x[..., :2]), -1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M)."""
    from torchvision.ops import box_iou as torchvision_box_iou  # imported when used: it loads torch._dynamo (~1 s)

    return torchvision_box_iou(a, b)


def bbox_ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise Complete IoU of xyxy boxes (broadcast over leading dims): IoU - rho^2/c^2 - alpha*v."""
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a.unbind(-1), b.unbind(-1)
    aw, ah = ax2 - ax1, (ay2 - ay1).clamp(min=eps)
    bw, bh = bx2 - bx1, (by2 - by1).clamp(min=eps)
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(0) * \
            (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(0)
    union = aw * ah + bw * bh - inter + eps
    iou = inter / union
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((bx1 + bx2 - ax1 - ax2) ** 2 + (by1 + by2 - ay1 - ay2) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(bw / bh) - torch.atan(aw / ah)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def non_max_suppression(pred: torch.Tensor, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                        classes: list[int] | None = None, agnostic: bool = False, multi_label: bool = False,
                        max_nms: int = 30000) -> list[torch.Tensor]:
    """Decoded head output ``(B, 4 + nc, A)`` (xywh) -> per image ``(n, 6)``: x1, y1, x2, y2, score, class.

    Each anchor keeps its best class, or with ``multi_label`` every class scoring above ``conf`` (one candidate
    per anchor and class: what COCO-style evaluation wants, since a box whose second-best class is right still
    counts); class-wise NMS via ``torchvision.ops.batched_nms`` unless ``agnostic``.
    """
    if pred.dim() != 3:
        raise ValueError(f"expected (batch, 4 + nc, anchors), got shape {tuple(pred.shape)}")
    out = []
    for p in pred.transpose(1, 2):  # (A, 4 + nc)
        if multi_label:
            anchor, labels = (p[:, 4:] > conf).nonzero(as_tuple=True)
            scores = p[anchor, 4 + labels]
        else:
            scores, labels = p[:, 4:].max(1)
            anchor = (scores > conf).nonzero(as_tuple=True)[0]
            scores, labels = scores[anchor], labels[anchor]
        if classes is not None:
            wanted = torch.isin(labels, torch.as_tensor(classes, device=labels.device))
            anchor, scores, labels = anchor[wanted], scores[wanted], labels[wanted]
        if scores.numel() > max_nms:
            top = scores.topk(max_nms).indices
            anchor, scores, labels = anchor[top], scores[top], labels[top]
        boxes = xywh2xyxy(p[anchor, :4])
        from torchvision.ops import batched_nms  # imported when used: it loads torch._dynamo (~1 s)

        idx = batched_nms(boxes, scores, torch.zeros_like(labels) if agnostic else labels, iou)
        idx = idx[:max_det]
        out.append(torch.cat((boxes[idx], scores[idx, None], labels[idx, None].to(boxes.dtype)), 1))
    return out


def unletterbox_boxes(boxes: torch.Tensor, ratio_pad: tuple, shape: tuple[int, int]) -> torch.Tensor:
    """Map xyxy boxes from a letterboxed image back to the original image and clip to ``shape`` (h, w).

    ``ratio_pad`` = ((gain_h, gain_w), (pad_w, pad_h)) with x_letterboxed = x * gain_w + pad_w.
    """
    (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
    boxes = boxes.clone()
    boxes[..., [0, 2]] = (boxes[..., [0, 2]] - pad_w) / gain_w
    boxes[..., [1, 3]] = (boxes[..., [1, 3]] - pad_h) / gain_h
    boxes[..., [0, 2]] = boxes[..., [0, 2]].clamp(0, shape[1])
    boxes[..., [1, 3]] = boxes[..., [1, 3]].clamp(0, shape[0])
    return boxes
