"""The image bootstrap's fast path: COCO AP from matched statistics equals COCO's own evaluation of a resample."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from synthetic_detections import resampled_set, synthetic_detection_set
from yololab.ablation.bootstrap import MatchedStats, image_weights, load_predictions
from yololab.metrics import evaluate_coco

METRICS = ("map", "map50", "aps", "apm", "apl")


@pytest.fixture(scope="module")
def detection_set():
    return synthetic_detection_set(seed=3, images=24, detections=80)  # crowd regions and every size included


def _close(direct: dict, fast: dict, index: int = 0) -> None:
    for name in METRICS:
        if direct[name] is None:
            assert np.isnan(fast[name][index]), name
        else:
            assert fast[name][index] == pytest.approx(direct[name], abs=1e-6), name


def test_unit_weights_give_cocos_numbers(detection_set):
    gt, predictions = detection_set
    _close(evaluate_coco(gt, predictions).summary, MatchedStats(gt, predictions).metrics(np.ones(24)))


def test_a_resample_equals_a_direct_coco_evaluation_of_the_repeated_images(detection_set):
    gt, predictions = detection_set
    matched = MatchedStats(gt, predictions)
    rng = np.random.default_rng(7)
    picks = [sorted(rng.integers(0, 24, 24).tolist()) for _ in range(3)] + [[0] * 24, list(range(12)) * 2]
    weights = np.stack([np.bincount(p, minlength=24) for p in picks])
    fast = matched.metrics(weights)
    for i, p in enumerate(picks):
        # the images in ascending original order, each repeated as often as drawn (ties then rank alike)
        _close(evaluate_coco(*resampled_set(gt, predictions, sorted(p))).summary, fast, i)


def test_weights_must_cover_every_image(detection_set):
    with pytest.raises(ValueError, match="weights give 23 images, the ground truth has 24"):
        MatchedStats(*detection_set).metrics(np.ones(23))


def test_image_weights_are_draws_with_replacement():
    w = image_weights(np.random.default_rng(0), 72, 500)
    assert w.shape == (500, 72) and (w.sum(1) == 72).all()
    assert w.mean() == pytest.approx(1.0) and w.var() == pytest.approx(1 - 1 / 72, rel=0.05)  # multinomial


def test_predictions_are_read_gzipped_or_plain(tmp_path):
    records = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]
    assert load_predictions(tmp_path) is None
    (tmp_path / "predictions.json").write_text(json.dumps(records))
    assert load_predictions(tmp_path) == records
    (tmp_path / "predictions.json.gz").write_bytes(gzip.compress(json.dumps(records[:0]).encode()))
    assert load_predictions(tmp_path) == []  # the kept (gzip'd) file first


def test_exact_on_bccds_own_ground_truth():
    gt_file = Path(__file__).parents[1] / ".." / "shared" / "datasets" / "bccd" / "annotations" / "instances_val.json"
    if not gt_file.is_file():
        pytest.skip(f"BCCD is not at {gt_file}")
    gt = json.loads(gt_file.read_text())
    rng = np.random.default_rng(0)
    predictions = []
    for a in gt["annotations"]:  # a detector that finds most cells, boxes a little off, plus false alarms
        x, y, w, h = a["bbox"]
        for _ in range(rng.integers(0, 3)):
            jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
            predictions.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": rng.random(),
                                "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1), max(h + jitter[3], 1)]})
    cats = [c["id"] for c in gt["categories"]]
    for im in gt["images"]:
        for _ in range(30):
            w, h = rng.uniform(5, 150, 2)
            predictions.append({"image_id": im["id"], "category_id": int(rng.choice(cats)), "score": rng.random() / 3,
                                "bbox": [rng.uniform(0, im["width"] - w), rng.uniform(0, im["height"] - h), w, h]})
    matched = MatchedStats(gt, predictions)
    _close(evaluate_coco(gt, predictions).summary, matched.metrics(np.ones(matched.n_images)))
    order = sorted(range(len(gt["images"])), key=lambda i: gt["images"][i]["id"])  # the weights' image order
    picks = sorted(rng.integers(0, len(order), len(order)).tolist())
    weights = np.bincount(picks, minlength=len(order))
    _close(evaluate_coco(*resampled_set(gt, predictions, [order[p] for p in picks])).summary, matched.metrics(weights))
