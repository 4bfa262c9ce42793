"""AutoAnchor: best possible recall, k-means + evolution, keep-only-if-better, and the BPR in check-data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from yololab import autoanchor
from yololab.autoanchor import check_anchors, kmeans_anchors, model_anchors
from yololab.data import check_data, format_check_report
from yololab.data.check import anchor_fit
from yololab.nn import DetectionModel


def labels_of(sizes_px: list[tuple[float, float]], per_image: int = 4, imgsz: int = 640) -> list[dict]:
    """Label dicts (as ``load_labels`` returns them) of square ``imgsz`` images holding boxes of the given sizes."""
    labels = []
    for start in range(0, len(sizes_px), per_image):
        wh = np.array(sizes_px[start:start + per_image], np.float32) / imgsz
        xy = np.full_like(wh, 0.5)
        labels.append({"cls": np.zeros((len(wh), 1), np.float32), "bboxes": np.concatenate((xy, wh), 1),
                       "shape": (imgsz, imgsz)})
    return labels


# 60% long thin boxes (no COCO prior is within a factor 4 on both sides) and 40% squares that fit
BADLY_FITTING = [(200, 8), (180, 9), (220, 7)] * 20 + [(40, 40), (45, 38)] * 20


def test_anchor_fit_by_hand():
    wh = np.array([[10, 10], [200, 10], [30, 12]], np.float32)
    bpr, per_box = anchor_fit(wh, np.array([[10, 10], [40, 10]], np.float32), anchor_t=4.0)
    # box 1 fits [10, 10] only (a width ratio of exactly 4 is not within 4), box 2 none (ratios 20 and 5), box 3 both
    assert bpr == pytest.approx(2 / 3) and per_box == pytest.approx(3 / 3)


def test_autoanchor_raises_bpr_on_badly_fitting_data():
    model = DetectionModel("yolov5n-anchor.yaml", nc=1)
    before = model_anchors(model).clone()
    result = check_anchors(model, labels_of(BADLY_FITTING), imgsz=640, generations=200, log=lambda _: None)
    assert result["changed"] and result["bpr_before"] < 0.5
    assert result["bpr"] > 0.98
    after = model_anchors(model)
    assert not np.allclose(after.numpy(), before.numpy())
    area = after.prod(-1).mean(-1)
    assert (area[1:] >= area[:-1]).all()  # levels ordered like the strides
    assert np.allclose(np.array(model.yaml["anchors"]), after.view(3, -1).numpy(), atol=0.01)


def test_fitting_anchors_are_kept():
    model = DetectionModel("yolov5n-anchor.yaml", nc=1)
    coco = model_anchors(model).view(-1, 2).tolist()
    result = check_anchors(model, labels_of([tuple(a) for a in coco] * 5), imgsz=640, log=lambda _: None)
    assert not result["changed"] and result["bpr"] == 1.0
    assert np.allclose(model_anchors(model).view(-1, 2).numpy(), coco)


def test_new_anchors_only_when_better(monkeypatch):
    model = DetectionModel("yolov5n-anchor.yaml", nc=1)
    before = model_anchors(model).clone()
    monkeypatch.setattr(autoanchor, "kmeans_anchors", lambda wh, n, *a, **k: np.full((n, 2), 600.0))
    messages = []
    result = check_anchors(model, labels_of(BADLY_FITTING), imgsz=640, log=messages.append)
    assert not result["changed"] and "kept" in messages[0]
    assert np.allclose(model_anchors(model).numpy(), before.numpy())


def test_anchor_count_is_always_computed():
    cfg = {**DetectionModel("yolov5n-anchor.yaml").yaml, "anchors": 3}
    model = DetectionModel(cfg, nc=1)
    labels = labels_of([(10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198)] * 6)
    result = check_anchors(model, labels, imgsz=640, generations=100, log=lambda _: None)
    assert result["changed"] and result["bpr"] > 0.98
    assert model.head.anchors_given and len(model.yaml["anchors"]) == 3


def test_kmeans_anchors_recover_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[12, 12], [60, 30], [200, 260]], np.float64)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (50, 2)) for c in centres])
    anchors = kmeans_anchors(wh, 3, generations=100)
    assert np.allclose(anchors, centres, rtol=0.1)


def test_anchor_free_model_is_left_alone():
    assert check_anchors(DetectionModel("yolov5n.yaml", nc=1), labels_of(BADLY_FITTING), imgsz=640) == {}


def test_check_data_reports_the_anchor_fit(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64)).save(images / f"{i}.jpg")
        (labels / f"{i}.txt").write_text("0 0.5 0.5 0.9 0.05\n0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images", "val": "images",
                                                        "names": ["thing"]}))
    anchors = model_anchors(DetectionModel("yolov5n-anchor.yaml", nc=1)).view(-1, 2).numpy()
    result = check_data(tmp_path / "data.yaml", imgsz=640, anchors=anchors)
    assert result["splits"]["train"]["anchor_fit"] == {"bpr": 0.5, "anchors_per_box": pytest.approx(2.5, abs=0.01)}
    assert "best possible recall 0.5000" in format_check_report(result)
    assert "anchor_fit" not in check_data(tmp_path / "data.yaml", imgsz=640)["splits"]["train"]


def test_check_data_command_with_a_model(tmp_path, capsys):
    from yololab.cli import main

    assert main(["check-data", "data=synthetic", "model=yolov5n-anchor.yaml", "imgsz=320", "json=true"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < result["splits"]["train"]["anchor_fit"]["bpr"] <= 1
    assert main(["check-data", "data=synthetic", "model=yolov5n.yaml"]) != 0
    assert "has no anchors" in capsys.readouterr().err
