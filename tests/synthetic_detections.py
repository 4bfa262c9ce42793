"""A generated COCO ground truth and detector output of a chosen size (no training), for the bootstrap tests."""

from __future__ import annotations

import numpy as np


def synthetic_detection_set(seed: int = 0, images: int = 20, classes: int = 3, objects: tuple[int, int] = (3, 15),
                            detections: int = 100, size: float = 640.0, crowd_share: float = 0.03,
                            skill: float = 0.7) -> tuple[dict, list[dict]]:
    """``(ground truth, predictions)``: boxes of every COCO size, crowd regions, and per image ``detections``
    scored detections (jittered copies of true boxes, some with the wrong class, and random boxes), continuous
    scores. ``skill`` is the share of objects the detector finds well."""
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": f"c{k}"} for k in range(classes)]}
    predictions = []
    for image_id in range(1, images + 1):
        gt["images"].append({"id": image_id, "file_name": f"{image_id}.jpg", "height": size, "width": size})
        boxes = []
        for _ in range(rng.integers(objects[0], objects[1] + 1)):
            w, h = np.exp(rng.uniform(np.log(8), np.log(220), 2))
            x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
            cat = int(rng.integers(1, classes + 1))
            crowd = int(rng.random() < crowd_share)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": cat,
                                      "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd})
            boxes.append((x, y, w, h, cat))
        found = 0
        for x, y, w, h, cat in boxes:
            for _ in range(rng.integers(1, 3)):  # a hit and sometimes a duplicate
                jitter = rng.normal(0, 0.08 if rng.random() < skill else 0.35, 4) * [w, h, w, h]
                score = float(rng.beta(5, 2) if rng.random() < skill else rng.beta(2, 4))
                label = cat if rng.random() < 0.9 else int(rng.integers(1, classes + 1))
                predictions.append({"image_id": image_id, "category_id": label, "score": score,
                                    "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0),
                                             max(h + jitter[3], 1.0)]})
                found += 1
        for _ in range(max(detections - found, 0)):  # background detections at low confidence
            w, h = np.exp(rng.uniform(np.log(6), np.log(200), 2))
            predictions.append({"image_id": image_id, "category_id": int(rng.integers(1, classes + 1)),
                                "score": float(rng.beta(1, 12)),
                                "bbox": [rng.uniform(0, size - w), rng.uniform(0, size - h), w, h]})
    return gt, predictions


def resampled_set(gt: dict, predictions: list[dict], picks: list[int]) -> tuple[dict, list[dict]]:
    """The data set made of images ``picks`` (indices into ``gt['images']``, repeats allowed) with new ids, in
    the order given: what a bootstrap resample is, evaluated directly."""
    old_ids = [im["id"] for im in gt["images"]]
    out = {"images": [], "annotations": [], "categories": gt["categories"]}
    by_image_gt: dict = {}
    by_image_dt: dict = {}
    for a in gt["annotations"]:
        by_image_gt.setdefault(a["image_id"], []).append(a)
    for p in predictions:
        by_image_dt.setdefault(p["image_id"], []).append(p)
    new_predictions = []
    for new_id, index in enumerate(picks, 1):
        old = old_ids[index]
        out["images"].append({**gt["images"][index], "id": new_id})
        for a in by_image_gt.get(old, []):
            out["annotations"].append({**a, "id": len(out["annotations"]) + 1, "image_id": new_id})
        new_predictions += [{**p, "image_id": new_id} for p in by_image_dt.get(old, [])]
    return out, new_predictions


def rescored(predictions: list[dict], seed: int, noise: float = 0.05) -> list[dict]:
    """Another "run" on the same images: every score moved by Gaussian noise (kept inside (0, 1))."""
    rng = np.random.default_rng(seed)
    return [{**p, "score": float(np.clip(p["score"] + rng.normal(0, noise), 1e-4, 1.0))} for p in predictions]
