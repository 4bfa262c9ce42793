"""COCO metrics: parity with pycocotools, edge cases, IoU-0.5 matching, P/R curves, confusion matrix, plots."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from yololab.metrics import (
    CONF_GRID,
    check_predictions,
    coco_image_ids,
    confusion_matrix,
    evaluate_coco,
    format_table,
    group_by_image,
    match_detections,
    precision_recall_curves,
    yolo_ground_truth,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BCCD_GT = SHARED / "datasets" / "bccd" / "annotations" / "instances_val.json"
HEADLINE = ("map", "map50", "map75", "aps", "apm", "apl", "ar1", "ar10", "ar", "ars", "arm", "arl")


def small_gt() -> dict:
    """Three images, two classes (ids 1 and 7), objects in all three size buckets."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 150} for i in (10, 11, 12)]
    boxes = [(10, 1, [5, 5, 20, 20]), (10, 7, [50, 40, 60, 50]), (11, 1, [85, 20, 110, 100]),
             (11, 1, [10, 90, 8, 12]), (12, 7, [30, 30, 40, 45])]
    annotations = [{"id": k, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                   for k, (im, c, b) in enumerate(boxes, 1)]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "cat"}, {"id": 7, "name": "dog"}]}


def perfect_predictions(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 0.9}
            for a in gt["annotations"] if not a.get("iscrowd", 0)]


def noisy_predictions(gt: dict, seed: int = 0) -> list[dict]:
    """Deterministic predictions from ground truth: jittered, dropped, relabelled, duplicated and false boxes."""
    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    cat_ids = [c["id"] for c in gt["categories"]]
    preds = []
    for a in gt["annotations"]:
        if rng.random() < 0.15:  # missed
            continue
        x, y, w, h = a["bbox"]
        jx, jy, jw, jh = rng.normal(0, 0.1, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cat_ids))
        box = [x + jx, y + jy, max(1.0, w + jw), max(1.0, h + jh)]
        preds.append({"image_id": a["image_id"], "category_id": cat, "bbox": box, "score": float(rng.random())})
        if rng.random() < 0.1:  # duplicate
            preds.append({**preds[-1], "bbox": [v + 1 for v in box], "score": float(rng.random())})
    for im_id, (w, h) in sizes.items():  # false positives
        for _ in range(int(rng.integers(0, 6))):
            bw, bh = rng.uniform(4, 160, 2)
            preds.append({"image_id": im_id, "category_id": int(rng.choice(cat_ids)),
                          "bbox": [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), bw, bh],
                          "score": float(rng.random() * 0.7)})
    return preds


def pycocotools_eval(gt: dict, preds: list[dict], max_dets: int = 100):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(preds)), "bbox")
        coco_eval.params.maxDets = [1, 10, max_dets]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def reference_stats(ref) -> list[float]:
    """The 12 COCO numbers from pycocotools' accumulated arrays at its last maxDets column."""
    precision, recall = ref.eval["precision"][..., -1], ref.eval["recall"][..., -1]  # (T, R, K, A), (T, K, A)

    def mean(values):
        return values[values > -1].mean() if (values > -1).any() else -1

    stats = [mean(precision[..., 0]), mean(precision[0, ..., 0]), mean(precision[5, ..., 0])]
    stats += [mean(precision[..., a]) for a in (1, 2, 3)]
    stats += [mean(ref.eval["recall"][:, :, 0, m]) for m in range(3)]
    return stats + [mean(recall[..., a]) for a in (1, 2, 3)]


def assert_matches_pycocotools(gt: dict, preds: list[dict], max_dets: int = 100) -> None:
    ours = evaluate_coco(gt, preds, max_dets=max_dets).summary
    ref = pycocotools_eval(gt, preds, max_dets)
    # pycocotools' summarize() reads the 100-detection column only; for other caps average its arrays the same way
    stats = ref.stats if max_dets == 100 else reference_stats(ref)
    for key, value in zip(HEADLINE, stats):
        expected = None if value < 0 else value
        assert (ours[key] is None) == (expected is None), key
        if expected is not None:
            assert ours[key] == pytest.approx(expected, abs=1e-4), key
    precision = ref.eval["precision"]  # (T, R, K, A, M)
    for k, cat in enumerate(sorted(c["id"] for c in gt["categories"])):
        name = next(c["name"] for c in gt["categories"] if c["id"] == cat)
        ap = precision[:, :, k, 0, -1]
        ap50 = precision[0, :, k, 0, -1]
        assert ours["per_class"][name]["ap"] == pytest.approx(ap[ap > -1].mean(), abs=1e-4)
        assert ours["per_class"][name]["ap50"] == pytest.approx(ap50[ap50 > -1].mean(), abs=1e-4)


# --------------------------------------------------------------------------------------------- parity
@pytest.mark.skipif(not BCCD_GT.is_file(), reason=f"shared dataset not found: {BCCD_GT}")
def test_bccd_noisy_predictions_match_pycocotools():
    gt = json.loads(BCCD_GT.read_text())
    preds = noisy_predictions(gt)
    assert_matches_pycocotools(gt, preds)
    summary = evaluate_coco(gt, preds).summary
    assert 0.1 < summary["map"] < 0.9 and summary["aps"] is not None  # a real, non-trivial score


@pytest.mark.skipif(not BCCD_GT.is_file(), reason=f"shared dataset not found: {BCCD_GT}")
def test_bccd_crowd_regions_and_max_dets_match_pycocotools():
    gt = json.loads(BCCD_GT.read_text())
    for a in gt["annotations"][::25]:
        a["iscrowd"] = 1
    preds = noisy_predictions(gt, seed=1)
    assert_matches_pycocotools(gt, preds)
    gt["images"] = gt["images"][:12]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] <= 12]
    preds = [p for p in preds if p["image_id"] <= 12]
    many = preds + [{**p, "score": p["score"] * 0.5} for p in preds] * 9
    assert max(Counter(p["image_id"] for p in many).values()) > 100
    assert_matches_pycocotools(gt, many, max_dets=300)


def test_small_gt_matches_pycocotools():
    gt = small_gt()
    assert_matches_pycocotools(gt, noisy_predictions(gt, seed=3))


# --------------------------------------------------------------------------------------------- edge cases
def test_ground_truth_against_itself_scores_one():
    gt = small_gt()
    s = evaluate_coco(gt, perfect_predictions(gt)).summary
    for key in ("map", "map50", "map75", "aps", "apm", "apl", "ar", "ars", "arm", "arl", "precision", "recall"):
        assert s[key] == pytest.approx(1.0), key
    assert all(c["ap"] == pytest.approx(1.0) and c["recall"] == 1.0 for c in s["per_class"].values())
    assert s["images"] == 3 and s["instances"] == 5
    assert s["per_class"]["cat"]["images"] == 2 and s["per_class"]["cat"]["instances"] == 3


def test_empty_predictions_score_zero():
    m = evaluate_coco(small_gt(), [])
    for key in HEADLINE + ("precision", "recall"):
        assert m.summary[key] == 0.0, key
    assert m.confusion[-1, :-1].tolist() == [3, 2]  # every object missed


def test_unknown_image_or_category_is_a_clear_error():
    gt = small_gt()
    good = perfect_predictions(gt)
    with pytest.raises(ValueError, match="image_id.*not in the ground truth.*99"):
        evaluate_coco(gt, good + [{**good[0], "image_id": 99}])
    with pytest.raises(ValueError, match=r"category_id.*\[3\].*not ground truth categories"):
        evaluate_coco(gt, good + [{**good[0], "category_id": 3}])
    with pytest.raises(ValueError, match="lacks score"):
        check_predictions(gt, [{"image_id": 10, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match="no .*annotations"):
        evaluate_coco({**gt, "annotations": []}, good)


def test_files_are_read_from_disk(tmp_path):
    gt = small_gt()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(perfect_predictions(gt)))
    assert evaluate_coco(tmp_path / "gt.json", tmp_path / "pred.json").summary["map"] == pytest.approx(1.0)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        evaluate_coco(tmp_path / "gt.json", tmp_path / "bad.json")


# --------------------------------------------------------------------------------------------- building blocks
def test_yolo_ground_truth_uses_pixel_boxes_and_box_area():
    labels = [{"im_file": "/d/a.jpg", "shape": (100, 200), "cls": np.array([[1.0]]),
               "bboxes": np.array([[0.5, 0.5, 0.1, 0.2]])},
              {"im_file": "/d/b.jpg", "shape": (50, 50), "cls": np.zeros((0, 1)), "bboxes": np.zeros((0, 4))}]
    gt = yolo_ground_truth(labels, {0: "a", 1: "b"})
    assert [im["id"] for im in gt["images"]] == [1, 2] and gt["images"][0]["width"] == 200
    (ann,) = gt["annotations"]
    assert ann["bbox"] == pytest.approx([90, 40, 20, 20]) and ann["area"] == pytest.approx(400)
    assert ann["category_id"] == 1 and ann["id"] == 1
    with pytest.raises(ValueError, match="class 1 is not in the dataset names"):
        yolo_ground_truth(labels, {0: "a"})


def test_one_image_id_rule():
    assert coco_image_ids(["/v/000000000139.jpg", "/v/7.png", "/w/12.jpg"]) == \
        {"/v/000000000139.jpg": 139, "/v/7.png": 7, "/w/12.jpg": 12}  # COCO's numeric names keep their number
    assert coco_image_ids(["/d/b.jpg", "/d/42.jpg", "/d/a.png"]) == {"/d/42.jpg": 1, "/d/a.png": 2, "/d/b.jpg": 3}
    assert coco_image_ids(["/d/2.jpg", "/d/02.jpg"]) == {"/d/02.jpg": 1, "/d/2.jpg": 2}  # numbers clash: by name
    labels = [{"im_file": f, "shape": (8, 8), "cls": np.zeros((0, 1)), "bboxes": np.zeros((0, 4))}
              for f in ("/d/b.jpg", "/d/a.jpg")]
    assert [(im["id"], im["file_name"]) for im in yolo_ground_truth(labels, {0: "x"})["images"]] == \
        [(1, "a.jpg"), (2, "b.jpg")]


def test_match_detections_greedy_duplicates_and_crowd():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 90, 90]], float)
    crowd = np.array([False, False, True])
    dets = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 24], [60, 60, 70, 70], [100, 100, 110, 110]], float)
    scores = np.array([0.9, 0.95, 0.8, 0.7, 0.6])
    # the higher-scored near-copy takes box 0, the exact copy is then a duplicate; IoU 0.4 misses; crowd -> ignored
    assert match_detections(dets, scores, gt, crowd).tolist() == [0, 1, 0, -1, 0]


def test_precision_recall_curves_by_hand():
    gt = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 0, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 10], "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 0, "bbox": [50, 50, 10, 10], "iscrowd": 0}]}
    preds = [{"image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 10], "score": 0.9},
             {"image_id": 1, "category_id": 0, "bbox": [80, 80, 5, 5], "score": 0.8},
             {"image_id": 1, "category_id": 0, "bbox": [50, 50, 10, 10], "score": 0.7}]
    p, r, n_gt = precision_recall_curves(group_by_image(gt, preds, [0]), 1)
    at = {c: int(np.argmin(np.abs(CONF_GRID - c))) for c in (0.5, 0.75, 0.85, 0.95)}
    assert n_gt.tolist() == [2]
    assert (p[0, at[0.95]], r[0, at[0.95]]) == (1.0, 0.0)  # nothing above: precision 1 by convention
    assert (p[0, at[0.85]], r[0, at[0.85]]) == (1.0, 0.5)
    assert (p[0, at[0.75]], r[0, at[0.75]]) == (0.5, 0.5)
    assert p[0, at[0.5]] == pytest.approx(2 / 3) and r[0, at[0.5]] == 1.0
    s = evaluate_coco(gt, preds).summary
    assert (s["precision"], s["recall"]) == (pytest.approx(2 / 3), 1.0)  # best F1 0.8 at conf <= 0.7


def test_confusion_matrix_counts():
    gt = small_gt()
    preds = [
        {"image_id": 10, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.9},  # cat as cat
        {"image_id": 10, "category_id": 1, "bbox": [50, 40, 60, 50], "score": 0.8},  # dog as cat
        {"image_id": 11, "category_id": 7, "bbox": [150, 120, 20, 20], "score": 0.7},  # false dog
        {"image_id": 12, "category_id": 7, "bbox": [30, 30, 40, 45], "score": 0.1},  # below conf: dog missed
    ]
    matrix = confusion_matrix(group_by_image(gt, preds, [1, 7]), 2, conf=0.25)
    # rows predicted (cat, dog, background), columns true
    assert matrix.tolist() == [[1, 1, 0], [0, 0, 1], [2, 1, 0]]


def test_table_lists_classes_and_empty_buckets():
    gt = small_gt()
    m = evaluate_coco(gt, perfect_predictions(gt))
    table = format_table(m)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["Class", "Images", "Instances"]
    assert lines[1].split()[:3] == ["all", "3", "5"] and lines[2].split()[0] == "cat"
    assert "APl" in lines[0] and "-" in lines[3].split()  # dog has no small object


def test_metric_plots_are_written(tmp_path):
    from yololab.engine.validator import save_metric_plots

    gt = small_gt()
    files = save_metric_plots(evaluate_coco(gt, noisy_predictions(gt)), tmp_path)
    assert [f.name for f in files] == ["pr_curve.png", "f1_curve.png", "confusion_matrix.png"]
    assert all(f.stat().st_size > 10_000 for f in files)
