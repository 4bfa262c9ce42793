"""The anchor-based YOLOv5 loss on hand-made cases: ratio rule, neighbour cells, each loss part, gains."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from yololab.anchor_loss import AnchorDetectionLoss, focal_bce, match_anchors
from yololab.loss import DetectionLoss, build_loss
from yololab.nn import DetectionModel
from yololab.nn.anchor_head import AnchorDetect

LN2 = math.log(2.0)


def bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def one_level_model(nc: int = 1, anchor_px: tuple = (16, 16), stride: float = 8.0, levels: int = 1):
    """A model stub whose head has ``levels`` levels of one anchor each, all of ``anchor_px`` pixels at ``stride``."""
    head = AnchorDetect(nc=nc, anchors=[list(anchor_px)] * levels, ch=[4] * levels)
    head.anchors_given = False  # the sizes stay as given: same stride-unit anchors on every level
    head.anchors /= stride
    head.set_strides(torch.full((levels,), stride))
    return SimpleNamespace(head=head)


def batch_of(*targets: tuple) -> dict:
    """(image, class, x, y, w, h) normalized rows -> the data loader's batch keys."""
    t = torch.tensor(targets, dtype=torch.float).view(-1, 6)
    return {"batch_idx": t[:, 0], "cls": t[:, 1:2], "bboxes": t[:, 2:6]}


def maps(nc: int, size: int = 4, batch: int = 1, levels: int = 1) -> list[torch.Tensor]:
    return [torch.zeros(batch, 5 + nc, size, size, requires_grad=True) for _ in range(levels)]


def test_ratio_rule_picks_anchors_within_anchor_t():
    anchors = torch.tensor([[1.0, 1.0], [4.0, 4.0], [1.0, 8.0]])
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.2, 0.2],    # 2 x 2 cells: ratio 2 to both squares, 4 to the tall one
                            [0, 0, 0.5, 0.5, 0.5, 0.15]])  # 5 x 1.5: ratio 5 to [1, 1], 2.67 to [4, 4], 5.3 to [1, 8]
    t = match_anchors(targets, anchors, (10, 10), anchor_t=4.0)
    pairs = sorted(set(zip(t.anchor.tolist(), t.box[:, 2].tolist())))
    assert pairs == [(0, 2.0), (1, 2.0), (1, 5.0)]
    assert len(match_anchors(targets, anchors, (10, 10), anchor_t=5.5).anchor.unique()) == 3


def test_neighbour_cells_are_the_two_nearest():
    anchors = torch.tensor([[5.0, 5.0]])
    # centre (3.3, 6.2) in a 10 x 10 grid: own cell (3, 6), left neighbour (2, 6), upper neighbour (3, 5)
    t = match_anchors(torch.tensor([[0, 2, 0.33, 0.62, 0.5, 0.5]]), anchors, (10, 10))
    assert t.cell.tolist() == [[3, 6], [2, 6], [3, 5]]
    assert torch.allclose(t.box, torch.tensor([[0.3, 0.2, 5, 5], [1.3, 0.2, 5, 5], [0.3, 1.2, 5, 5]]))
    assert t.cls.tolist() == [2, 2, 2] and t.image.tolist() == [0, 0, 0]
    # centre (0.8, 9.6): right neighbour (1, 9); the nearer vertical one (row 10) is outside the grid
    t = match_anchors(torch.tensor([[1, 0, 0.08, 0.96, 0.5, 0.5]]), anchors, (10, 10))
    assert t.cell.tolist() == [[0, 9], [1, 9]] and t.image.tolist() == [1, 1]
    # centre (0.4, 0.4) in the corner cell: both near neighbours would be outside, none is added
    t = match_anchors(torch.tensor([[0, 0, 0.04, 0.04, 0.5, 0.5]]), anchors, (10, 10))
    assert t.cell.tolist() == [[0, 0]]


def test_no_targets_gives_only_objectness_loss():
    loss_fn = AnchorDetectionLoss(one_level_model(nc=2), imgsz=32)
    total, parts = loss_fn(maps(2), batch_of())
    obj_gain = 1.0 * (32 / 640) ** 2 * 3
    assert parts[0] == 0 and parts[1] == 0
    assert parts[2].item() == pytest.approx(LN2 * 4.0 * obj_gain, rel=1e-6)  # BCE(0, 0) = ln 2 on every cell
    total.backward()


def test_box_loss_and_objectness_target_is_the_iou():
    model = one_level_model(nc=1, anchor_px=(16, 16))  # 2 x 2 cells
    loss_fn = AnchorDetectionLoss(model, box=1.0, obj=1.0, imgsz=32)
    feats = maps(1)
    with torch.no_grad():
        feats[0][0, 4, 1, 1] = 1.5  # objectness logit of the only positive
    # centre of cell (1, 1), 4 x 4 cells: zero logits predict the anchor (2 x 2) at the centre -> IoU 4/16 = CIoU
    total, parts = loss_fn(feats, batch_of((0, 0, 1.5 / 4, 1.5 / 4, 1.0, 1.0)))
    assert parts[0].item() == pytest.approx(0.75 * 3, rel=1e-5)
    expected_obj = (15 * LN2 + bce(1.5, 0.25)) / 16 * 4.0 * (32 / 640) ** 2 * 3
    assert parts[2].item() == pytest.approx(expected_obj, rel=1e-5)
    assert parts[1] == 0  # one class: no class loss
    total.backward()
    assert feats[0].grad[0, 2:4, 1, 1].lt(0).all()  # the width and height logits are pushed up


def test_class_loss_with_label_smoothing():
    model = one_level_model(nc=3)
    feats = maps(3)
    with torch.no_grad():
        feats[0][0, 5 + 1, 1, 1] = 2.0
    batch = batch_of((0, 1, 1.5 / 4, 1.5 / 4, 0.5, 0.5))
    _, parts = AnchorDetectionLoss(model, cls=1.0, imgsz=32)(feats, batch)
    cls_gain = 3 / 80 * 3
    assert parts[1].item() == pytest.approx((2 * LN2 + bce(2.0, 1.0)) / 3 * cls_gain, rel=1e-5)
    _, parts = AnchorDetectionLoss(model, cls=1.0, label_smoothing=0.1, imgsz=32)(feats, batch)
    assert parts[1].item() == pytest.approx((2 * LN2 + bce(2.0, 0.95)) / 3 * cls_gain, rel=1e-5)


def test_focal_modulation():
    z, gamma = torch.tensor([1.2, -0.4]), 1.5
    p = torch.sigmoid(z)
    expected = (-torch.log(p[0]) * 0.25 * (1 - p[0]) ** gamma - torch.log(1 - p[1]) * 0.75 * p[1] ** gamma) / 2
    assert focal_bce(z, torch.tensor([1.0, 0.0]), gamma).item() == pytest.approx(expected.item(), rel=1e-6)
    assert focal_bce(z, torch.tensor([1.0, 0.0])).item() == pytest.approx(
        (bce(1.2, 1.0) + bce(-0.4, 0.0)) / 2, rel=1e-6)


def test_objectness_balance_per_level():
    loss_fn = AnchorDetectionLoss(one_level_model(nc=2, levels=3), obj=1.0, imgsz=640)
    _, parts = loss_fn(maps(2, levels=3), batch_of())
    assert parts[2].item() == pytest.approx(LN2 * (4.0 + 1.0 + 0.4), rel=1e-6)


@pytest.mark.parametrize("levels, nc, imgsz", [(3, 80, 640), (3, 20, 320), (1, 80, 640)])
def test_gains_scale_with_levels_classes_and_image_size(levels, nc, imgsz):
    loss_fn = AnchorDetectionLoss(one_level_model(nc=nc, levels=levels), box=0.05, cls=0.5, obj=1.0, imgsz=imgsz)
    assert loss_fn.gains == pytest.approx((0.05 * 3 / levels, 0.5 * nc / 80 * 3 / levels,
                                           (imgsz / 640) ** 2 * 3 / levels))


def test_build_loss_follows_the_head():
    hyp = {"box": 0.05, "cls": 0.5, "dfl": 1.5, "obj": 0.7, "imgsz": 320, "anchor_t": 3.0}
    anchor_loss = build_loss(DetectionModel("yolov5n-anchor.yaml", nc=2), hyp)
    assert isinstance(anchor_loss, AnchorDetectionLoss) and anchor_loss.anchor_t == 3.0
    assert anchor_loss.gains[2] == pytest.approx(0.7 * 0.25)
    assert isinstance(build_loss(DetectionModel("yolov5n.yaml", nc=2), hyp), DetectionLoss)


def test_full_model_loss_backpropagates():
    model = DetectionModel("yolov5n-anchor.yaml", nc=2).train()
    batch = batch_of((0, 0, 0.3, 0.4, 0.2, 0.3), (1, 1, 0.7, 0.6, 0.05, 0.08), (1, 0, 0.5, 0.5, 0.9, 0.8))
    total, parts = build_loss(model, {"box": 0.05, "cls": 0.5, "imgsz": 64})(model(torch.rand(2, 3, 64, 64)), batch)
    assert torch.isfinite(total) and (parts > 0).all()
    total.backward()
    assert all(conv.weight.grad is not None for conv in model.head.m)
