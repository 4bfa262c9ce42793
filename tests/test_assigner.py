"""Task-aligned assigner on hand-made cases (one stride-8 level of 8 x 8 anchors, a 64 px image)."""

import torch

from yololab.assigner import TaskAlignedAssigner
from yololab.nn.head import make_anchors

STRIDE = 8.0
GRID = 8
NC = 3


def anchors_px() -> torch.Tensor:
    points, _ = make_anchors([torch.zeros(1, 1, GRID, GRID)], torch.tensor([STRIDE]))
    return points * STRIDE  # centres at 4, 12, ..., 60


def anchor_index(x: float, y: float) -> int:
    return int((y - 4) // 8) * GRID + int((x - 4) // 8)


def assign(gt_boxes, gt_labels, pred_boxes=None, pred_scores=None, **kw):
    """One image; predictions default to a 20 px box on every anchor with score 0.5 for every class."""
    anchors = anchors_px()
    a = anchors.shape[0]
    gt = torch.tensor(gt_boxes, dtype=torch.float).view(1, -1, 4)
    labels = torch.tensor(gt_labels, dtype=torch.float).view(1, -1, 1)
    if pred_boxes is None:
        pred_boxes = torch.cat((anchors - 10, anchors + 10), 1).unsqueeze(0)
    if pred_scores is None:
        pred_scores = torch.full((1, a, NC), 0.5)
    mask = torch.ones_like(labels, dtype=torch.bool)
    assigner = TaskAlignedAssigner(**{"topk": 10, "num_classes": NC, "min_size": 16.0, **kw})
    return assigner(pred_scores, pred_boxes, anchors, labels, gt, mask)


def test_box_centred_on_an_anchor_gets_only_that_anchor():
    labels, boxes, scores, fg, gt_idx = assign([[0, 0, 8, 8]], [2])
    # Widened to 16 px around (4, 4): [-4, 12] keeps the anchor at 4, the one at 12 lies on the edge (not inside).
    assert fg.nonzero()[:, 1].tolist() == [anchor_index(4, 4)]
    assert labels[0, anchor_index(4, 4)] == 2
    assert torch.equal(boxes[0, anchor_index(4, 4)], torch.tensor([0.0, 0, 8, 8]))
    assert scores[0, anchor_index(4, 4)].argmax() == 2
    assert scores[0, ~fg[0]].abs().sum() == 0


def test_anchor_on_the_box_edge_is_not_a_candidate():
    # Box [12, 12, 44, 44]: anchor centres 12 and 44 lie on its edges, so the candidates are 20, 28, 36 per axis.
    _, _, _, fg, _ = assign([[12, 12, 44, 44]], [0], topk=64)
    xs = sorted({(i % GRID) * 8 + 4 for i in fg.nonzero()[:, 1].tolist()})
    assert xs == [20, 28, 36]
    assert int(fg.sum()) == 9


def test_tiny_box_gets_anchors_only_through_the_minimum_size():
    tiny = [[17, 17, 19, 19]]  # 2 px box between anchor centres
    _, _, _, fg_plain, _ = assign(tiny, [1], min_size=0.0)
    assert not fg_plain.any()
    _, boxes, scores, fg, _ = assign(tiny, [1])
    # Widened to [10, 26]: anchors 12 and 20 on each axis.
    assert sorted(fg.nonzero()[:, 1].tolist()) == sorted(anchor_index(x, y) for x in (12, 20) for y in (12, 20))
    assert torch.equal(boxes[0, fg[0]][0], torch.tensor([17.0, 17, 19, 19]))  # targets keep the true box
    assert scores[0][fg[0]][:, [0, 2]].abs().sum() == 0  # only the GT's class is a target


def test_topk_limits_positives_per_box():
    big = [[0, 0, 64, 64]]  # all 64 anchors are candidates
    _, _, _, fg, _ = assign(big, [0], topk=10)
    assert int(fg.sum()) == 10
    _, _, _, fg, _ = assign(big, [0], topk=3)
    assert int(fg.sum()) == 3


def test_topk_prefers_the_best_aligned_predictions():
    anchors = anchors_px()
    pred = torch.cat((anchors - 10, anchors + 10), 1).unsqueeze(0)
    good = [anchor_index(28, 28), anchor_index(36, 36)]
    pred[0, good] = torch.tensor([16.0, 16, 48, 48])  # exact predictions of the GT
    _, _, scores, fg, _ = assign([[16, 16, 48, 48]], [0], pred_boxes=pred, topk=2)
    assert sorted(fg.nonzero()[:, 1].tolist()) == sorted(good)
    # Soft target of the best anchor = the GT's best IoU (1 here).
    assert torch.allclose(scores[0, good, 0], torch.ones(2))


def test_overlapping_boxes_anchor_goes_to_the_higher_iou():
    anchors = anchors_px()
    pred = torch.cat((anchors - 10, anchors + 10), 1).unsqueeze(0)
    shared = anchor_index(28, 28)
    pred[0, shared] = torch.tensor([20.0, 20, 40, 40])  # equals GT 1, overlaps GT 0 less
    _, boxes, _, fg, gt_idx = assign([[8, 8, 40, 40], [20, 20, 40, 40]], [0, 1], pred_boxes=pred, topk=64)
    assert fg[0, shared]
    assert gt_idx[0, shared] == 1
    assert torch.equal(boxes[0, shared], torch.tensor([20.0, 20, 40, 40]))
    # Every anchor is assigned to at most one GT: the candidate sets overlap but fg counts each anchor once.
    assert int(fg.sum()) == len(set(fg.nonzero()[:, 1].tolist()))


def test_image_without_boxes_and_padding():
    anchors = anchors_px()
    a = anchors.shape[0]
    assigner = TaskAlignedAssigner(topk=10, num_classes=NC)
    scores = torch.full((2, a, NC), 0.5)
    pred = torch.cat((anchors - 10, anchors + 10), 1).expand(2, -1, -1)
    # Image 0 has one box, image 1 only padding.
    gt = torch.tensor([[[0.0, 0, 32, 32]], [[0.0, 0, 0, 0]]])
    labels = torch.zeros(2, 1, 1)
    mask = torch.tensor([[[True]], [[False]]])
    _, _, target_scores, fg, _ = assigner(scores, pred, anchors, labels, gt, mask)
    assert fg[0].any() and not fg[1].any()
    assert target_scores[1].abs().sum() == 0
    # No boxes in the whole batch (M = 0).
    out = assigner(scores, pred, anchors, torch.zeros(2, 0, 1), torch.zeros(2, 0, 4), torch.zeros(2, 0, 1))
    assert not out[3].any() and out[2].abs().sum() == 0
