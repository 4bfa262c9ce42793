"""Task-aligned label assignment (TOOD) for anchor-free heads."""

from __future__ import annotations

import torch
from torch import nn

from .ops import bbox_ciou


class TaskAlignedAssigner(nn.Module):
    """Pick the anchors that should predict each ground-truth box and build soft classification targets.

    For every ground truth (GT), the candidates are the anchor centres strictly inside the box; a GT whose side is
    shorter than ``min_size`` pixels is widened to ``min_size`` around its centre for this test only, so tiny objects
    still get anchors. Each candidate is scored with the alignment ``score^alpha * CIoU^beta`` (predicted score of the
    GT's class, CIoU of the predicted box with the GT) and the ``topk`` best become positives. An anchor claimed by
    several GTs keeps the one it overlaps most. The class target of a positive is the alignment normalised so the best
    anchor of its GT gets that GT's highest IoU.
    """

    def __init__(self, topk: int = 10, num_classes: int = 80, alpha: float = 0.5, beta: float = 6.0,
                 min_size: float = 16.0, eps: float = 1e-9):
        super().__init__()
        self.topk, self.num_classes, self.alpha, self.beta, self.min_size, self.eps = (
            topk, num_classes, alpha, beta, min_size, eps)

    @torch.no_grad()
    def forward(self, pred_scores: torch.Tensor, pred_bboxes: torch.Tensor, anchor_points: torch.Tensor,
                gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor):
        """Assign targets.

        Args:
            pred_scores: (B, A, C) class probabilities (after sigmoid).
            pred_bboxes: (B, A, 4) predicted xyxy boxes, pixels.
            anchor_points: (A, 2) anchor centres, pixels.
            gt_labels: (B, M, 1) class indices; gt_bboxes: (B, M, 4) xyxy pixels; mask_gt: (B, M, 1) 1 for real
                boxes, 0 for padding.

        Returns:
            target_labels (B, A) long, target_bboxes (B, A, 4) xyxy pixels, target_scores (B, A, C),
            fg_mask (B, A) bool, target_gt_idx (B, A) long (index of the assigned GT).
        """
        b, a, c = pred_scores.shape
        m = gt_bboxes.shape[1]
        device = pred_scores.device
        if m == 0:
            return (torch.full((b, a), self.num_classes, dtype=torch.long, device=device),
                    torch.zeros_like(pred_bboxes), torch.zeros_like(pred_scores),
                    torch.zeros((b, a), dtype=torch.bool, device=device),
                    torch.zeros((b, a), dtype=torch.long, device=device))

        candidates = self.candidates_inside(anchor_points, gt_bboxes) & mask_gt.bool()  # (B, M, A)
        align, overlaps = self.alignment(pred_scores, pred_bboxes, gt_labels, gt_bboxes, candidates)
        positives = self.select_topk(align, candidates)  # (B, M, A)
        target_gt_idx, fg_mask, positives = self.resolve_conflicts(positives, overlaps)

        batch_offset = torch.arange(b, device=device)[:, None] * m
        flat_idx = target_gt_idx + batch_offset  # (B, A)
        target_labels = gt_labels.long().flatten()[flat_idx].clamp_(0, self.num_classes - 1)
        target_bboxes = gt_bboxes.view(-1, 4)[flat_idx]
        target_scores = torch.zeros((b, a, self.num_classes), dtype=pred_scores.dtype, device=device)
        target_scores.scatter_(2, target_labels.unsqueeze(-1), 1.0)
        target_scores *= fg_mask.unsqueeze(-1)

        # Soft targets: per GT, alignment / max alignment * max IoU over its positives.
        align = align * positives
        max_align = align.amax(-1, keepdim=True)  # (B, M, 1)
        max_iou = (overlaps * positives).amax(-1, keepdim=True)
        norm = (align * max_iou / (max_align + self.eps)).amax(1).unsqueeze(-1)  # (B, A, 1)
        target_labels = torch.where(fg_mask, target_labels, self.num_classes)
        return target_labels, target_bboxes, target_scores * norm, fg_mask, target_gt_idx

    def candidates_inside(self, anchor_points: torch.Tensor, gt_bboxes: torch.Tensor) -> torch.Tensor:
        """(B, M, A) bool: anchor centre strictly inside the GT box widened to at least ``min_size`` per side."""
        centre = (gt_bboxes[..., :2] + gt_bboxes[..., 2:]) / 2
        half = ((gt_bboxes[..., 2:] - gt_bboxes[..., :2]).clamp(min=self.min_size) / 2)
        x1y1, x2y2 = (centre - half).unsqueeze(2), (centre + half).unsqueeze(2)  # (B, M, 1, 2)
        px, py = anchor_points[:, 0], anchor_points[:, 1]
        return ((px - x1y1[..., 0] > self.eps) & (x2y2[..., 0] - px > self.eps)
                & (py - x1y1[..., 1] > self.eps) & (x2y2[..., 1] - py > self.eps))

    def alignment(self, pred_scores: torch.Tensor, pred_bboxes: torch.Tensor, gt_labels: torch.Tensor,
                  gt_bboxes: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Alignment metric and CIoU (clamped at 0), both (B, M, A), computed on the candidate pairs only."""
        b, m, a = candidates.shape
        overlaps = torch.zeros((b, m, a), dtype=pred_bboxes.dtype, device=pred_bboxes.device)
        scores = torch.zeros_like(overlaps)
        bi, gi, ai = candidates.nonzero(as_tuple=True)
        labels = gt_labels[bi, gi, 0].long().clamp(0, self.num_classes - 1)
        scores[bi, gi, ai] = pred_scores[bi, ai, labels].to(overlaps.dtype)
        overlaps[bi, gi, ai] = bbox_ciou(gt_bboxes[bi, gi], pred_bboxes[bi, ai]).clamp_(min=0).to(overlaps.dtype)
        return scores.pow(self.alpha) * overlaps.pow(self.beta), overlaps

    def select_topk(self, align: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, M, A) bool: the ``topk`` best-aligned candidates of each GT."""
        k = min(self.topk, align.shape[-1])
        # Candidates rank above non-candidates even at zero alignment.
        top_idx = align.masked_fill(~candidates, -1.0).topk(k, dim=-1).indices
        chosen = torch.zeros_like(candidates)
        chosen.scatter_(-1, top_idx, True)
        return chosen & candidates

    @staticmethod
    def resolve_conflicts(positives: torch.Tensor, overlaps: torch.Tensor):
        """Keep, for an anchor claimed by several GTs, only the GT with the highest IoU.

        Returns target_gt_idx (B, A), fg_mask (B, A) and the de-duplicated positives (B, M, A).
        """
        claims = positives.sum(1)  # (B, A)
        if (claims > 1).any():
            best = overlaps.masked_fill(~positives, -1.0).argmax(1)  # (B, A)
            unique = torch.zeros_like(positives)
            unique.scatter_(1, best.unsqueeze(1), True)
            positives = torch.where((claims > 1).unsqueeze(1), unique & positives, positives)
        return positives.float().argmax(1), positives.any(1), positives
