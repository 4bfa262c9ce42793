"""Detection loss of the anchor-free DFL head: BCE classification, CIoU box and Distribution Focal Loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .anchor_loss import AnchorDetectionLoss
from .assigner import TaskAlignedAssigner
from .nn.anchor_head import AnchorDetect
from .nn.head import bbox2dist, dist2bbox, make_anchors
from .ops import bbox_ciou, xywh2xyxy


def distribution_focal_loss(pred_dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL (Li et al., GFL): cross-entropy on the two bins around a continuous target, weighted by proximity.

    ``pred_dist`` (N, reg_max) logits, ``target`` (N,) in [0, reg_max - 1); returns (N,).
    """
    left = target.long()
    weight_left = (left + 1).to(target.dtype) - target
    return (F.cross_entropy(pred_dist, left, reduction="none") * weight_left
            + F.cross_entropy(pred_dist, left + 1, reduction="none") * (1 - weight_left))


def targets_to_padded(batch_idx: torch.Tensor, cls: torch.Tensor, bboxes: torch.Tensor, batch_size: int,
                      img_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat labels -> per-image padded ``labels (B, M, 1)``, ``boxes (B, M, 4)`` xyxy pixels and ``mask (B, M, 1)``.

    ``bboxes`` are normalized xywh (the data contract); ``img_hw`` is the network input size.
    """
    device = bboxes.device
    counts = torch.bincount(batch_idx.long(), minlength=batch_size) if batch_idx.numel() else \
        torch.zeros(batch_size, dtype=torch.long, device=device)
    m = int(counts.max()) if batch_size else 0
    labels = torch.zeros((batch_size, m, 1), device=device)
    boxes = torch.zeros((batch_size, m, 4), device=device)
    mask = torch.zeros((batch_size, m, 1), dtype=torch.bool, device=device)
    if m:
        image = batch_idx.long()
        order = torch.argsort(image, stable=True)
        image = image[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(image.numel(), device=device) - starts[image]
        h, w = img_hw
        scale = torch.tensor([w, h, w, h], device=device, dtype=boxes.dtype)
        labels[image, slot] = cls[order].view(-1, 1).to(labels.dtype)
        boxes[image, slot] = xywh2xyxy(bboxes[order].to(boxes.dtype) * scale)
        mask[image, slot] = True
    return labels, boxes, mask


class DetectionLoss(nn.Module):
    """Loss of a ``DetectionModel`` whose head returns raw per-level maps ``(B, 4 * reg_max + nc, H, W)``.

    Returns ``(total, parts)``: ``total`` = (box * CIoU loss + cls * BCE + dfl * DFL) x batch size (a per-batch sum,
    the scale the default SGD learning rate is tuned for) and ``parts`` the detached (box, cls, dfl) values.
    """

    part_names = ("box", "cls", "dfl")

    def __init__(self, model: nn.Module, box: float = 7.5, cls: float = 0.5, dfl: float = 1.5, topk: int = 10,
                 alpha: float = 0.5, beta: float = 6.0, min_size: float | None = None):
        super().__init__()
        head = model.head
        self.nc, self.reg_max = head.nc, head.reg_max
        self.register_buffer("stride", model.stride.clone().float(), persistent=False)
        self.gains = (box, cls, dfl)
        if min_size is None:  # widen small GTs to the middle stride for candidate selection
            min_size = float(self.stride[len(self.stride) // 2])
        self.assigner = TaskAlignedAssigner(topk=topk, num_classes=self.nc, alpha=alpha, beta=beta,
                                            min_size=min_size)
        self.register_buffer("bins", torch.arange(self.reg_max, dtype=torch.float), persistent=False)

    def forward(self, feats: list[torch.Tensor], batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        feats = [f.float() for f in feats]  # the loss runs in float32, also under autocast
        b, device = feats[0].shape[0], feats[0].device
        pred = torch.cat([f.flatten(2) for f in feats], 2).transpose(1, 2)  # (B, A, no)
        pred_dist, pred_logits = pred.split((4 * self.reg_max, self.nc), -1)
        anchors, anchor_strides = make_anchors(feats, self.stride.to(device))  # grid units, (A, 1)
        img_hw = (feats[0].shape[2] * int(self.stride[0]), feats[0].shape[3] * int(self.stride[0]))

        labels, gt_boxes, mask = targets_to_padded(batch["batch_idx"].to(device), batch["cls"].to(device),
                                                   batch["bboxes"].to(device), b, img_hw)
        pred_boxes = self.decode(anchors, pred_dist)  # xyxy, grid units
        _, target_boxes, target_scores, fg, _ = self.assigner(
            pred_logits.detach().sigmoid(), (pred_boxes.detach() * anchor_strides),
            anchors * anchor_strides, labels, gt_boxes, mask)
        score_sum = target_scores.sum().clamp(min=1.0)

        loss_cls = F.binary_cross_entropy_with_logits(pred_logits, target_scores, reduction="sum") / score_sum
        loss_box = loss_dfl = pred.new_zeros(())
        if fg.any():
            weight = target_scores.sum(-1)[fg]  # (P,)
            target_grid = target_boxes[fg] / anchor_strides.expand(b, -1, -1)[fg]
            ciou = bbox_ciou(pred_boxes[fg], target_grid)
            loss_box = ((1.0 - ciou) * weight).sum() / score_sum
            if self.reg_max > 1:
                anchor_fg = anchors.expand(b, -1, -1)[fg]
                target_dist = bbox2dist(anchor_fg, target_grid, self.reg_max)  # (P, 4)
                dfl = distribution_focal_loss(pred_dist[fg].view(-1, self.reg_max), target_dist.flatten())
                loss_dfl = (dfl.view(-1, 4).mean(-1) * weight).sum() / score_sum

        parts = torch.stack((loss_box * self.gains[0], loss_cls * self.gains[1], loss_dfl * self.gains[2]))
        return parts.sum() * b, parts.detach()

    def decode(self, anchors: torch.Tensor, pred_dist: torch.Tensor) -> torch.Tensor:
        """(B, A, 4 * reg_max) bin logits -> (B, A, 4) xyxy boxes in grid units (expected distance per side).

        A ``reg_max: 1`` head has no distribution: it predicts the four distances directly (and has no DFL term).
        """
        if self.reg_max == 1:
            return dist2bbox(pred_dist, anchors, xywh=False)
        b, a, _ = pred_dist.shape
        # .to(pred_dist): the loss may be built on the CPU and used with a CUDA model
        dist = pred_dist.view(b, a, 4, self.reg_max).softmax(-1) @ self.bins.to(pred_dist)
        return dist2bbox(dist, anchors, xywh=False)


def build_loss(model: nn.Module, hyp: dict) -> nn.Module:
    """The loss that fits the model's head, with its gains from the settings ``hyp``.

    Anchor-based heads read ``box``, ``cls``, ``obj``, ``anchor_t``, ``label_smoothing``, ``fl_gamma``, ``imgsz`` and
    ``loss_ota`` (keys not in ``hyp`` take YOLOv5's values); the anchor-free head reads ``box``, ``cls`` and ``dfl``.
    """
    if isinstance(model.head, AnchorDetect):
        keys = ("box", "cls", "obj", "anchor_t", "label_smoothing", "fl_gamma", "imgsz")
        gains = {k: float(hyp[k]) for k in keys if hyp.get(k) is not None}
        return AnchorDetectionLoss(model, **gains, ota=bool(hyp.get("loss_ota") or False))
    return DetectionLoss(model, box=float(hyp["box"]), cls=float(hyp["cls"]), dfl=float(hyp["dfl"]))
