"""CIoU and DFL against hand-computed values, target padding, and the detection loss on small cases."""

import math

import pytest
import torch

from yololab.loss import DetectionLoss, distribution_focal_loss, targets_to_padded
from yololab.nn import DetectionModel
from yololab.ops import bbox_ciou

TINY = {
    "nc": 2,
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]],
                 [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]]],
    "head": [[[2, 3, 4], 1, "Detect", ["nc"]]],
}


def test_ciou_same_aspect_ratio_by_hand():
    # IoU 1/7; enclosing box 3 x 3 (c^2 = 18); centres (1, 1), (2, 2) (rho^2 = 2); aspect term 0.
    ciou = bbox_ciou(torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 1, 3, 3]))
    assert ciou.item() == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)


def test_ciou_with_aspect_term_by_hand():
    # IoU 4/8; enclosing 4 x 2 (c^2 = 20); rho^2 = 1; v = 4/pi^2 (atan(1) - atan(2))^2, alpha = v / (v - iou + 1).
    v = 4 / math.pi ** 2 * (math.atan(1) - math.atan(2)) ** 2
    expected = 0.5 - 1 / 20 - v * v / (v - 0.5 + 1)
    ciou = bbox_ciou(torch.tensor([0.0, 0, 4, 2]), torch.tensor([0.0, 0, 2, 2]))
    assert ciou.item() == pytest.approx(expected, abs=1e-6)
    assert bbox_ciou(torch.tensor([1.0, 2, 5, 9]), torch.tensor([1.0, 2, 5, 9])).item() == pytest.approx(1, abs=1e-6)


def test_dfl_by_hand():
    # Uniform logits: both cross-entropies are ln(16) and the weights 0.7 / 0.3 sum to 1.
    assert distribution_focal_loss(torch.zeros(1, 16), torch.tensor([2.3])).item() == pytest.approx(math.log(16))
    logits = torch.zeros(1, 16)
    logits[0, 2] = 10.0
    z = math.exp(10) + 15
    expected = -0.7 * math.log(math.exp(10) / z) - 0.3 * math.log(1 / z)
    assert distribution_focal_loss(logits, torch.tensor([2.3])).item() == pytest.approx(expected, rel=1e-5)
    # A target exactly on a bin puts all weight on it.
    assert distribution_focal_loss(logits, torch.tensor([2.0])).item() == pytest.approx(-math.log(math.exp(10) / z),
                                                                                           abs=1e-6)


def test_targets_to_padded_mixed_counts():
    batch_idx = torch.tensor([2.0, 0, 0, 2, 0])
    cls = torch.tensor([[1.0], [0], [1], [0], [1]])
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5]] * 5)
    labels, xyxy, mask = targets_to_padded(batch_idx, cls, boxes, 4, (64, 128))
    assert labels.shape == (4, 3, 1)
    assert mask.squeeze(-1).sum(1).tolist() == [3, 0, 2, 0]
    assert labels[2, :2, 0].tolist() == [1.0, 0.0]  # order within an image is kept
    assert xyxy[0, 0].tolist() == [32.0, 16.0, 96.0, 48.0]  # normalized xywh -> pixels (w 128, h 64)
    labels, _, mask = targets_to_padded(torch.zeros(0), torch.zeros(0, 1), torch.zeros(0, 4), 2, (64, 64))
    assert labels.shape == (2, 0, 1) and mask.numel() == 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DetectionModel(TINY).train()


def batch_with(boxes, idx, cls):
    return {"batch_idx": torch.tensor(idx, dtype=torch.float), "cls": torch.tensor(cls, dtype=torch.float).view(-1, 1),
            "bboxes": torch.tensor(boxes, dtype=torch.float).view(-1, 4)}


def test_loss_mixed_batch_and_gradients(model):
    loss_fn = DetectionLoss(model)
    model.zero_grad()
    feats = model(torch.rand(3, 3, 64, 64))
    batch = batch_with([[0.5, 0.5, 0.4, 0.4], [0.2, 0.3, 0.1, 0.1], [0.7, 0.7, 0.3, 0.5]], [0, 0, 2], [0, 1, 1])
    total, parts = loss_fn(feats, batch)
    assert torch.isfinite(total) and (parts > 0).all()
    assert total.item() == pytest.approx(parts.sum().item() * 3, rel=1e-5)  # per-batch sum
    total.backward()
    assert model.head.cv2[0][-1].weight.grad.abs().sum() > 0
    assert model.head.cv3[0][-1].weight.grad.abs().sum() > 0
    assert model.head.dfl.conv.weight.grad is None  # the DFL ramp stays frozen


def test_loss_without_boxes_is_classification_only(model):
    feats = model(torch.rand(2, 3, 64, 64))
    total, parts = DetectionLoss(model)(feats, batch_with([], [], []))
    assert parts[0] == 0 and parts[2] == 0 and parts[1] > 0
    assert torch.isfinite(total)


def test_a_head_without_dfl_trains_on_ciou_alone():
    torch.manual_seed(0)
    model = DetectionModel({**TINY, "reg_max": 1}).train()
    assert isinstance(model.head.dfl, torch.nn.Identity)
    total, parts = DetectionLoss(model)(model(torch.rand(2, 3, 64, 64)), batch_with([[0.5, 0.5, 0.4, 0.4]], [1], [1]))
    assert parts[0] > 0 and parts[1] > 0 and parts[2] == 0
    total.backward()
    assert model.head.cv2[0][-1].weight.grad.abs().sum() > 0  # the box branch learns from CIoU


def test_loss_gains_are_applied(model):
    feats = [f.detach() for f in model(torch.rand(2, 3, 64, 64))]
    batch = batch_with([[0.5, 0.5, 0.4, 0.4]], [1], [1])
    _, base = DetectionLoss(model)(feats, batch)
    _, scaled = DetectionLoss(model, box=0.0, cls=1.0, dfl=3.0)(feats, batch)
    assert scaled[0] == 0
    assert scaled[1].item() == pytest.approx(base[1].item() * 2, rel=1e-5)
    assert scaled[2].item() == pytest.approx(base[2].item() * 2, rel=1e-5)


def test_loss_is_lower_for_a_matching_prediction(model):
    """Logits that put the right distances and class on the assigned anchors give a lower loss than random ones."""
    loss_fn = DetectionLoss(model)
    feats = [torch.randn(1, 4 * 16 + 2, 64 // int(s), 64 // int(s)) for s in model.stride]
    batch = batch_with([[0.5, 0.5, 0.5, 0.5]], [0], [1])
    _, random_parts = loss_fn(feats, batch)
    good = [f.clone() for f in feats]
    for f, s in zip(good, model.stride.tolist()):
        f[:, 64:] = -10.0  # background everywhere
        h = f.shape[-1]
        for iy in range(h):
            for ix in range(h):
                cx, cy = (ix + 0.5) * s, (iy + 0.5) * s
                if 16 < cx < 48 and 16 < cy < 48:
                    dists = torch.tensor([cx - 16, cy - 16, 48 - cx, 48 - cy]) / s
                    for side, d in enumerate(dists.tolist()):
                        lo = min(int(d), 14)
                        f[0, side * 16:(side + 1) * 16, iy, ix] = -20.0
                        f[0, side * 16 + lo, iy, ix] = 10.0 * (1 - (d - lo))
                        f[0, side * 16 + lo + 1, iy, ix] = 10.0 * (d - lo)
                    f[0, 64 + 1, iy, ix] = 5.0
    _, good_parts = loss_fn(good, batch)
    assert good_parts[0] < 0.1 * random_parts[0]  # box loss: near-perfect CIoU
    assert good_parts[1] < random_parts[1]
