"""Loss of the anchor-based YOLOv5 head: wh-ratio anchor matching with two neighbour cells, CIoU box loss,
objectness BCE towards the IoU with per-level balance, class BCE (optional label smoothing and focal modulation).
With ``ota`` the matched candidates are re-assigned by YOLOv7's OTA rule (``ota_assign``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .ops import bbox_ciou, box_iou, xywh2xyxy

# Objectness weight per level, finest first (YOLOv5's balance for 3 levels, and for up to 5).
OBJECTNESS_BALANCE = {3: (4.0, 1.0, 0.4)}
OBJECTNESS_BALANCE_DEEP = (4.0, 1.0, 0.25, 0.06, 0.02)
# Cell offsets tried for every matched target: its own cell, then left, up, right, down (in units of half a cell).
NEIGHBOUR_OFFSETS = ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1))
# Weight of the auxiliary heads' losses (YOLOv7's IAuxDetect training).
AUX_WEIGHT = 0.25


@dataclass
class LevelTargets:
    """Positives of one level: image, anchor, cell (x, y) and class indices, and the target box in grid units
    (x, y relative to the cell's corner, w, h)."""

    image: torch.Tensor
    anchor: torch.Tensor
    cell: torch.Tensor
    cls: torch.Tensor
    box: torch.Tensor


def match_anchors(targets: torch.Tensor, anchors: torch.Tensor, grid_hw: tuple[int, int], anchor_t: float = 4.0,
                  reach: float = 0.5) -> LevelTargets:
    """Assign targets to the anchors of one level and to their cell plus the two nearest neighbour cells.

    ``targets`` (n, 6) = image, class, x, y, w, h (normalized xywh); ``anchors`` (na, 2) in grid units of this level.
    A target matches an anchor when neither its width nor its height ratio to the anchor exceeds ``anchor_t`` (either
    way). Each match also goes to the horizontal and the vertical neighbour cell nearer to the target's centre (the
    cell whose border is less than half a cell away), unless that neighbour is outside the grid. ``reach`` = 1.0 takes
    all four neighbours inside the grid (YOLOv7's candidates for its auxiliary heads).
    """
    h, w = grid_hw
    gain = torch.tensor([w, h, w, h], dtype=targets.dtype, device=targets.device)
    boxes = targets[:, 2:6] * gain  # grid units
    ratio = boxes[None, :, 2:4] / anchors[:, None]  # (na, n, 2)
    anchor, target = (torch.maximum(ratio, 1 / ratio).amax(2) < anchor_t).nonzero(as_tuple=True)
    xy, inverse = boxes[target, :2], gain[:2] - boxes[target, :2]
    near_low = (xy % 1 < reach) & (xy > 1)  # left / upper neighbour within reach
    near_high = (inverse % 1 < reach) & (inverse > 1)  # right / lower neighbour
    use = torch.stack((torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1], near_high[:, 0],
                       near_high[:, 1]))
    offset_id, pair = use.nonzero(as_tuple=True)
    offsets = torch.tensor(NEIGHBOUR_OFFSETS, dtype=boxes.dtype, device=boxes.device) * reach
    centre = xy[pair] - offsets[offset_id]
    cell = centre.long()
    box = torch.cat((xy[pair] - cell, boxes[target[pair], 2:4]), 1)
    cell[:, 0].clamp_(0, w - 1)
    cell[:, 1].clamp_(0, h - 1)
    t = targets[target[pair]]
    return LevelTargets(t[:, 0].long(), anchor[pair], cell, t[:, 1].long(), box)


def ota_assign(levels: list[LevelTargets], preds: list[torch.Tensor], anchors: torch.Tensor,
               targets: torch.Tensor, top_candidates: int = 10, iou_weight: float = 3.0) -> list[LevelTargets]:
    """YOLOv7's OTA assignment: among the candidates ``match_anchors`` found (all levels), each target takes its
    ``k`` cheapest, ``k`` = the sum of its ``top_candidates`` best IoUs with the candidates' predicted boxes (at least
    1); cost = class BCE of sqrt(objectness x class probability) + ``iou_weight`` x -log IoU. A candidate chosen by
    several targets goes to the target for which it is cheapest (among all of its image's targets, as in YOLOv7). Returns per level the chosen candidates with their target's box and class.

    ``preds``: per level (B, na, H, W, 5 + nc) raw outputs; ``anchors`` (levels, na, 2) in grid units; ``targets``
    (n, 6) image, class, normalized xywh. Boxes are compared in normalized image units (IoU is scale-free).
    """
    cand = _ota_candidates(levels, preds, anchors)
    if cand["level"].numel() == 0:
        return levels
    nc = preds[0].shape[-1] - 5
    keep = torch.zeros_like(cand["level"], dtype=torch.bool)
    owner = torch.full_like(cand["level"], -1)
    for image in cand["image"].unique():
        cols = (cand["image"] == image).nonzero(as_tuple=True)[0]
        rows = (targets[:, 0] == image).nonzero(as_tuple=True)[0]
        iou = box_iou(xywh2xyxy(targets[rows, 2:6]), xywh2xyxy(cand["box"][cols]))  # (targets, candidates)
        k = iou.topk(min(top_candidates, iou.shape[1]), 1).values.sum(1).int().clamp(min=1)
        score = cand["score"][cols].sqrt().clamp(1e-6, 1 - 1e-6)  # (candidates, nc)
        onehot = F.one_hot(targets[rows, 1].long(), nc).float()
        cls_cost = F.binary_cross_entropy(score[None].expand(len(rows), -1, -1),
                                          onehot[:, None].expand(-1, len(cols), -1), reduction="none").sum(-1)
        cost = cls_cost - iou_weight * torch.log(iou + 1e-8)
        chosen = torch.zeros_like(cost, dtype=torch.bool)
        for r in range(len(rows)):
            chosen[r, cost[r].topk(min(int(k[r]), cost.shape[1]), largest=False).indices] = True
        taken, shared = chosen.any(0), chosen.sum(0) > 1
        best = torch.where(shared, cost.argmin(0), chosen.float().argmax(0))  # shared: the cheapest of all targets
        keep[cols[taken]] = True
        owner[cols[taken]] = rows[best[taken]]
    return _ota_levels(levels, cand, keep, owner, targets, preds)


def _ota_candidates(levels: list[LevelTargets], preds: list[torch.Tensor], anchors: torch.Tensor) -> dict:
    """Every level's candidates in one table: level, index within the level, image, predicted normalized xywh box and
    class score (objectness x class probability, detached)."""
    parts = {"level": [], "index": [], "image": [], "box": [], "score": []}
    for i, (t, pred) in enumerate(zip(levels, preds)):
        h, w = pred.shape[2:4]
        p = pred[t.image, t.anchor, t.cell[:, 1], t.cell[:, 0]].detach()
        xy = (p[:, :2].sigmoid() * 2 - 0.5 + t.cell) / p.new_tensor([w, h])
        wh = (p[:, 2:4].sigmoid() * 2) ** 2 * anchors[i][t.anchor] / p.new_tensor([w, h])
        parts["level"].append(torch.full_like(t.image, i))
        parts["index"].append(torch.arange(len(t.image), device=t.image.device))
        parts["image"].append(t.image)
        parts["box"].append(torch.cat((xy, wh), 1))
        parts["score"].append(p[:, 5:].sigmoid() * p[:, 4:5].sigmoid())
    return {k: torch.cat(v) for k, v in parts.items()}


def _ota_levels(levels: list[LevelTargets], cand: dict, keep: torch.Tensor, owner: torch.Tensor,
                targets: torch.Tensor, preds: list[torch.Tensor]) -> list[LevelTargets]:
    out = []
    for i, (t, pred) in enumerate(zip(levels, preds)):
        sel = keep & (cand["level"] == i)
        index, gt = cand["index"][sel], targets[owner[sel]]
        h, w = pred.shape[2:4]
        cell = t.cell[index]
        boxes = gt[:, 2:6] * gt.new_tensor([w, h, w, h])
        out.append(LevelTargets(t.image[index], t.anchor[index], cell, gt[:, 1].long(),
                                torch.cat((boxes[:, :2] - cell, boxes[:, 2:4]), 1)))
    return out


def focal_bce(logits: torch.Tensor, target: torch.Tensor, gamma: float = 0.0, alpha: float = 0.25) -> torch.Tensor:
    """Mean BCE with logits; with ``gamma > 0`` each term is weighted by the focal factor ``a_t * (1 - p_t)^gamma``."""
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if gamma > 0:
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        loss = loss * (target * alpha + (1 - target) * (1 - alpha)) * (1 - p_t) ** gamma
    return loss.mean()


class AnchorDetectionLoss(nn.Module):
    """Loss of a model whose head is ``AnchorDetect`` (raw maps ``(B, na * (5 + nc), H, W)`` in training mode).

    The gains are given for 3 levels, 80 classes and 640 pixels and scaled like YOLOv5 does: box x 3 / nl,
    cls x nc / 80 x 3 / nl, obj x (imgsz / 640)^2 x 3 / nl. Returns ``(total, parts)``: total = the gained sum
    x batch size, parts the detached (box, cls, obj) values.
    """

    part_names = ("box", "cls", "obj")

    def __init__(self, model: nn.Module, box: float = 0.05, cls: float = 0.5, obj: float = 1.0, anchor_t: float = 4.0,
                 label_smoothing: float = 0.0, fl_gamma: float = 0.0, imgsz: float = 640, ota: bool = False):
        super().__init__()
        head = model.head
        self.nc, self.na, self.nl = head.nc, head.na, head.nl
        if self.nl > len(OBJECTNESS_BALANCE_DEEP):
            raise ValueError(f"the anchor-based loss has objectness weights for up to 5 levels, the head has {self.nl}")
        self.register_buffer("anchors", head.anchors.detach().clone(), persistent=False)
        self.balance = OBJECTNESS_BALANCE.get(self.nl, OBJECTNESS_BALANCE_DEEP[:self.nl])
        levels = 3 / self.nl
        self.gains = (box * levels, cls * self.nc / 80 * levels, obj * (imgsz / 640) ** 2 * levels)
        self.anchor_t, self.fl_gamma, self.ota = anchor_t, fl_gamma, ota
        self.cls_positive, self.cls_negative = 1.0 - 0.5 * label_smoothing, 0.5 * label_smoothing

    def forward(self, feats: list[torch.Tensor], batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        feats = [f.float() for f in feats]  # the loss runs in float32, also under autocast
        device = feats[0].device
        targets = torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"].view(-1, 4)),
                            1).to(device=device, dtype=torch.float)
        anchors = self.anchors.to(device)
        preds = [f.view(f.shape[0], self.na, 5 + self.nc, *f.shape[2:]).permute(0, 1, 3, 4, 2) for f in feats]
        lead, aux = preds[:self.nl], preds[self.nl:]
        matched = [match_anchors(targets, anchors[i], p.shape[2:4], self.anchor_t) for i, p in enumerate(lead)]
        top = 20 if aux else 10  # YOLOv7 sums the 20 best IoUs for k in models with auxiliary heads
        if self.ota:
            matched = ota_assign(matched, lead, anchors, targets, top)
        losses = self._level_losses(lead, matched, anchors)
        if aux:  # IAuxDetect in training: wider candidates, assigned on the lead predictions, weighted AUX_WEIGHT
            matched = [match_anchors(targets, anchors[i], p.shape[2:4], self.anchor_t, reach=1.0)
                       for i, p in enumerate(lead)]
            if self.ota:
                matched = ota_assign(matched, lead, anchors, targets, top)
            losses = losses + AUX_WEIGHT * self._level_losses(aux, matched, anchors)
        parts = losses * losses.new_tensor(self.gains)
        return parts.sum() * feats[0].shape[0], parts.detach()

    def _level_losses(self, preds: list[torch.Tensor], matched: list[LevelTargets], anchors: torch.Tensor
                      ) -> torch.Tensor:
        """(box, cls, obj) losses summed over levels, before gains; ``preds`` per level (B, na, H, W, 5 + nc)."""
        loss_box = loss_cls = loss_obj = preds[0].new_zeros(())
        for i, (pred, t) in enumerate(zip(preds, matched)):
            target_obj = torch.zeros(pred.shape[:4], device=pred.device)
            if t.image.numel():
                p = pred[t.image, t.anchor, t.cell[:, 1], t.cell[:, 0]]  # (n, 5 + nc)
                xy = p[:, :2].sigmoid() * 2 - 0.5
                wh = (p[:, 2:4].sigmoid() * 2) ** 2 * anchors[i][t.anchor]
                iou = bbox_ciou(xywh2xyxy(torch.cat((xy, wh), 1)), xywh2xyxy(t.box))
                loss_box = loss_box + (1.0 - iou).mean()
                target_obj[t.image, t.anchor, t.cell[:, 1], t.cell[:, 0]] = iou.detach().clamp(0)
                if self.nc > 1:  # a single class is all objectness
                    target_cls = torch.full_like(p[:, 5:], self.cls_negative)
                    target_cls[torch.arange(len(t.cls), device=pred.device), t.cls] = self.cls_positive
                    loss_cls = loss_cls + focal_bce(p[:, 5:], target_cls, self.fl_gamma)
            loss_obj = loss_obj + focal_bce(pred[..., 4], target_obj, self.fl_gamma) * self.balance[i]
        return torch.stack((loss_box, loss_cls, loss_obj))
