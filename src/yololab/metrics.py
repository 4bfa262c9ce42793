"""Detection metrics on COCO-format data.

AP and AR come from ``faster-coco-eval`` (the COCO protocol: 10 IoU thresholds, 101 recall points, area buckets).
Around it: ground truth built from YOLO labels, checks of prediction files, precision/recall at the best-F1
confidence (detections matched at IoU 0.5, per class, then averaged) and a confusion matrix with a background
row and column.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster

from .data.records import coco_image_ids
from .errors import UserError
from .ops import box_iou, xyxy2xywh

PR_IOU = 0.5  # IoU at which precision, recall, F1 and the confusion matrix count a detection as correct
CONF_GRID = np.linspace(0, 1, 1001)  # confidences at which the P, R and F1 curves are sampled


# --------------------------------------------------------------------------------------------- COCO json in
def load_coco_json(path: str | Path) -> Any:
    """Read a COCO json file (ground truth dict or prediction list) with a clear error on bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO json not found: {path}")
    try:
        return json.loads(path.read_bytes())
    except ValueError as e:  # not JSON, or not UTF-8/16/32 text
        raise UserError(f"{path} is not valid JSON: {e}") from None


def check_ground_truth(gt: dict) -> None:
    """Raise ValueError if ``gt`` is not a COCO detection ground truth (images, annotations, categories)."""
    if not isinstance(gt, dict):
        raise UserError(f"ground truth must be a COCO dict with images/annotations/categories, got {type(gt).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in gt]
    if missing:
        raise UserError(f"ground truth has no {', '.join(missing)} (a COCO instances json is needed)")
    if not gt["categories"]:
        raise UserError("ground truth has no categories")
    if not any(not a.get("iscrowd", 0) for a in gt["annotations"]):
        raise UserError("ground truth has no (non-crowd) annotations: nothing to evaluate against")
    image_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    for i, ann in enumerate(gt["annotations"]):
        if ann.get("image_id") not in image_ids:
            raise UserError(f"ground truth annotation {i} (id {ann.get('id')}) refers to unknown image_id "
                             f"{ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_ids:
            raise UserError(f"ground truth annotation {i} (id {ann.get('id')}) has category_id "
                             f"{ann.get('category_id')!r}, not in categories {sorted(cat_ids)}")
        if "bbox" not in ann or len(ann["bbox"]) != 4:
            raise UserError(f"ground truth annotation {i} (id {ann.get('id')}) has no 4-number bbox")


def check_predictions(gt: dict, predictions: list[dict]) -> None:
    """Raise ValueError naming the problem if a prediction is malformed or refers to unknown images/categories."""
    if not isinstance(predictions, list):
        raise UserError(f"predictions must be a COCO results list, got {type(predictions).__name__}")
    image_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    for i, p in enumerate(predictions):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in p]
        if missing:
            raise UserError(f"prediction {i} lacks {', '.join(missing)}: {p}")
        if len(p["bbox"]) != 4 or p["bbox"][2] < 0 or p["bbox"][3] < 0:
            raise UserError(f"prediction {i} bbox must be [x, y, w, h] with w, h >= 0, got {p['bbox']}")
    unknown_images = sorted({p["image_id"] for p in predictions} - image_ids, key=str)
    if unknown_images:
        raise UserError(f"{len(unknown_images)} prediction image_id(s) are not in the ground truth images, "
                         f"e.g. {unknown_images[:5]}")
    unknown_cats = sorted({p["category_id"] for p in predictions} - cat_ids, key=str)
    if unknown_cats:
        raise UserError(f"prediction category_id(s) {unknown_cats[:10]} are not ground truth categories "
                         f"{sorted(cat_ids)}")


def coco_records(det: torch.Tensor, image_id: int, category_ids: dict[int, int] | None = None) -> list[dict]:
    """COCO result dicts of one image from (n, 6) x1 y1 x2 y2 score class (bbox = x, y, w, h; 3 decimals);
    ``category_ids`` maps class index -> category id (default: the class index itself)."""
    xywh = xyxy2xywh(det[:, :4].float())
    xywh[:, :2] -= xywh[:, 2:] / 2
    return [{"image_id": image_id, "category_id": category_ids[int(c)] if category_ids else int(c),
             "bbox": [round(v, 3) for v in b], "score": round(s, 5)}
            for b, s, c in zip(xywh.tolist(), det[:, 4].tolist(), det[:, 5].tolist())]


def yolo_ground_truth(labels: Iterable[dict], names: dict[int, str]) -> dict:
    """COCO ground truth from YOLO labels (``{"im_file", "shape": (h, w), "cls", "bboxes": normalized xywh}``).

    Image ids follow ``data.records.coco_image_ids``, category id = class index, ``area`` = box area in pixels
    (official COCO uses the mask area, so APs/APm/APl of a converted COCO set can differ slightly).
    """
    labels = list(labels)
    ids = coco_image_ids(lb["im_file"] for lb in labels)
    images, annotations = [], []
    for label in sorted(labels, key=lambda lb: ids[str(lb["im_file"])]):
        image_id = ids[str(label["im_file"])]
        h, w = label["shape"]
        images.append({"id": image_id, "file_name": Path(label["im_file"]).name, "height": int(h), "width": int(w)})
        boxes = np.asarray(label["bboxes"], dtype=np.float64).reshape(-1, 4) * [w, h, w, h]
        for c, (cx, cy, bw, bh) in zip(np.asarray(label["cls"]).reshape(-1), boxes):
            if int(c) not in names:
                raise UserError(f"{label['im_file']}: class {int(c)} is not in the dataset names (0..{len(names) - 1})")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(c),
                                "bbox": [cx - bw / 2, cy - bh / 2, bw, bh], "area": bw * bh, "iscrowd": 0})
    categories = [{"id": int(i), "name": str(n)} for i, n in sorted(names.items())]
    return {"images": images, "annotations": annotations, "categories": categories}


# --------------------------------------------------------------------------------------------- results
@dataclass
class DetectionMetrics:
    """The JSON-able summary (``summary``) plus the curves behind it, for tables and plots."""

    summary: dict[str, Any]
    names: list[str]  # one per evaluated category, in category-id order
    pr_curves: np.ndarray  # (K, 101) interpolated precision at IoU 0.5 over recall_points; -1 for classes without gt
    recall_points: np.ndarray  # (101,)
    precision_conf: np.ndarray  # (K, len(CONF_GRID)) precision at each confidence threshold
    recall_conf: np.ndarray  # (K, len(CONF_GRID))
    f1_conf: np.ndarray  # (K, len(CONF_GRID))
    confusion: np.ndarray  # (K + 1, K + 1), see confusion_matrix


def evaluate_coco(gt: dict | str | Path, predictions: list[dict] | str | Path, *, max_dets: int = 100,
                  confusion_conf: float = 0.25) -> DetectionMetrics:
    """Score COCO predictions against a COCO ground truth.

    ``summary`` holds ``map`` (AP50-95), ``map50``, ``map75``, ``aps``/``apm``/``apl``, ``ar1``/``ar10``/``ar``
    (recall at ``max_dets``), ``ars``/``arm``/``arl``, ``precision``/``recall``/``f1`` at the best-F1
    confidence ``conf_best``, ``images``, ``instances`` and ``per_class`` ({name: {ap, ap50, ap75, aps, apm,
    apl, precision, recall, images, instances}}). Size-bucket values are None when the ground truth has no object of that size. ``max_dets`` is
    COCO's per-image detection cap (100 in the official protocol; raise it for images with more objects).
    """
    gt = load_coco_json(gt) if isinstance(gt, (str, Path)) else gt
    predictions = load_coco_json(predictions) if isinstance(predictions, (str, Path)) else predictions
    check_ground_truth(gt)
    check_predictions(gt, predictions)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    names = {c["id"]: str(c["name"]) for c in gt["categories"]}

    coco_eval = _run_cocoeval(gt, predictions, max_dets)
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M): IoU, recall point, class, area, max-dets
    stats = coco_eval.stats  # AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl
    iou50 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
    iou75 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.75)))

    groups = group_by_image(gt, predictions, cat_ids)
    p_conf, r_conf, n_gt = precision_recall_curves(groups, len(cat_ids))
    f1_conf = 2 * p_conf * r_conf / np.maximum(p_conf + r_conf, 1e-16)
    has_gt = n_gt > 0
    best = int(np.argmax(f1_conf[has_gt].mean(0))) if has_gt.any() else 0

    images_per_class = np.zeros(len(cat_ids), dtype=int)
    for g in groups.values():
        images_per_class[np.unique(g.gt_cls[~g.gt_crowd])] += 1

    per_class = {}
    for k, cid in enumerate(cat_ids):
        per_class[names[cid]] = {
            "ap": _mean_valid(precision[:, :, k, 0, -1]),
            "ap50": _mean_valid(precision[iou50, :, k, 0, -1]),
            "ap75": _mean_valid(precision[iou75, :, k, 0, -1]),
            "aps": _mean_valid(precision[:, :, k, 1, -1]),  # area ranges: all, small, medium, large
            "apm": _mean_valid(precision[:, :, k, 2, -1]),
            "apl": _mean_valid(precision[:, :, k, 3, -1]),
            "precision": float(p_conf[k, best]) if has_gt[k] else None,
            "recall": float(r_conf[k, best]) if has_gt[k] else None,
            "images": int(images_per_class[k]),
            "instances": int(n_gt[k]),
        }
    summary = {
        "map": _stat(stats[0]), "map50": _stat(stats[1]), "map75": _stat(stats[2]),
        "aps": _stat(stats[3]), "apm": _stat(stats[4]), "apl": _stat(stats[5]),
        "ar1": _stat(stats[6]), "ar10": _stat(stats[7]), "ar": _stat(stats[8]),
        "ars": _stat(stats[9]), "arm": _stat(stats[10]), "arl": _stat(stats[11]),
        "precision": float(p_conf[has_gt, best].mean()),
        "recall": float(r_conf[has_gt, best].mean()),
        "f1": float(f1_conf[has_gt, best].mean()),
        "conf_best": float(CONF_GRID[best]),
        "max_dets": max_dets,
        "images": len(gt["images"]),
        "instances": int(n_gt.sum()),
        "per_class": per_class,
    }
    return DetectionMetrics(
        summary=summary,
        names=[names[c] for c in cat_ids],
        pr_curves=precision[iou50, :, :, 0, -1].T.copy(),
        recall_points=np.asarray(coco_eval.params.recThrs),
        precision_conf=p_conf, recall_conf=r_conf, f1_conf=f1_conf,
        confusion=confusion_matrix(groups, len(cat_ids), conf=confusion_conf),
    )


def _run_cocoeval(gt: dict, predictions: list[dict], max_dets: int) -> COCOeval_faster:
    """Evaluate, accumulate and summarize with faster-coco-eval (its console output suppressed)."""
    quiet = lambda *args, **kwargs: None  # noqa: E731
    # the COCO API adds fields to annotation and result dicts (ignore; id, area, segmentation): give it copies
    coco_gt = COCO({**gt, "annotations": [dict(a) for a in gt["annotations"]]}, print_function=quiet)
    coco_dt = coco_gt.loadRes([dict(p) for p in predictions])
    coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=quiet)
    coco_eval.params.maxDets = [1, 10, max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def _mean_valid(values: np.ndarray) -> float | None:
    """Mean over entries > -1 (COCO marks 'no ground truth here' with -1); None if there are none."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def _stat(value: float) -> float | None:
    return None if value < 0 else float(value)


# --------------------------------------------------------------------------------------------- matching
@dataclass
class ImageBoxes:
    """One image's ground truth and detections as arrays (xyxy pixels, class = index into the category list)."""

    gt_boxes: np.ndarray  # (n, 4)
    gt_cls: np.ndarray  # (n,) int
    gt_crowd: np.ndarray  # (n,) bool
    dt_boxes: np.ndarray  # (m, 4)
    dt_cls: np.ndarray  # (m,) int
    dt_scores: np.ndarray  # (m,)


def group_by_image(gt: dict, predictions: list[dict], cat_ids: list[int]) -> dict[Any, ImageBoxes]:
    """Ground truth annotations and predictions grouped per image id (images without either included)."""
    index = {cid: k for k, cid in enumerate(cat_ids)}
    gts: dict[Any, list] = {im["id"]: [] for im in gt["images"]}
    dts: dict[Any, list] = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        gts[a["image_id"]].append((*a["bbox"], index[a["category_id"]], bool(a.get("iscrowd", 0))))
    for p in predictions:
        dts[p["image_id"]].append((*p["bbox"], index[p["category_id"]], p["score"]))
    groups = {}
    for image_id in gts:
        g = np.asarray(gts[image_id], dtype=np.float64).reshape(-1, 6)
        d = np.asarray(dts[image_id], dtype=np.float64).reshape(-1, 6)
        groups[image_id] = ImageBoxes(
            gt_boxes=_ltwh_to_xyxy(g[:, :4]), gt_cls=g[:, 4].astype(int), gt_crowd=g[:, 5].astype(bool),
            dt_boxes=_ltwh_to_xyxy(d[:, :4]), dt_cls=d[:, 4].astype(int), dt_scores=d[:, 5],
        )
    return groups


def _ltwh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO ``bbox`` boxes (left, top, width, height) to corners; ``ops.xywh2xyxy`` takes centre boxes."""
    return np.concatenate((boxes[:, :2], boxes[:, :2] + boxes[:, 2:]), 1)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _ioa(dets: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Intersection over detection area (how COCO overlaps a detection with a crowd region): (m, r)."""
    lt = np.maximum(dets[:, None, :2], regions[None, :, :2])
    rb = np.minimum(dets[:, None, 2:], regions[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = np.prod(dets[:, 2:] - dets[:, :2], 1)[:, None]
    return inter / np.maximum(area, 1e-12)


def match_detections(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray,
                     iou_thr: float = PR_IOU) -> np.ndarray:
    """COCO-style greedy matching of one class in one image: +1 true positive, 0 false positive, -1 ignored.

    Detections are taken by descending score; each takes the unmatched non-crowd ground truth box of highest
    IoU >= ``iou_thr``; a detection without one that covers a crowd region (IoA >= ``iou_thr``) is ignored.
    """
    result = np.zeros(len(det_boxes), dtype=int)
    if not len(det_boxes) or not len(gt_boxes):
        return result
    people, crowd = gt_boxes[~gt_crowd], gt_boxes[gt_crowd]
    iou = _iou(det_boxes, people) if len(people) else np.zeros((len(det_boxes), 0))
    ioa = _ioa(det_boxes, crowd) if len(crowd) else np.zeros((len(det_boxes), 0))
    taken = np.zeros(len(people), dtype=bool)
    order = np.argsort(-det_scores, kind="stable")
    for d in order[(iou[order] >= iou_thr).any(1)]:  # the others cannot match anything
        candidates = np.where(taken, -1.0, iou[d])
        if candidates.max() >= iou_thr:
            taken[int(candidates.argmax())] = True
            result[d] = 1
    if ioa.shape[1]:
        result[(result == 0) & (ioa >= iou_thr).any(1)] = -1
    return result


def precision_recall_curves(groups: dict[Any, ImageBoxes], nc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision and recall at every confidence in ``CONF_GRID`` (detections matched at IoU 0.5).

    Returns ``(precision (nc, C), recall (nc, C), gt_count (nc,))``. Ignored detections (on crowd regions) are
    left out. A class without ground truth has zero curves.
    """
    scores = [[] for _ in range(nc)]
    hits = [[] for _ in range(nc)]
    n_gt = np.zeros(nc, dtype=int)
    for g in groups.values():
        np.add.at(n_gt, g.gt_cls[~g.gt_crowd], 1)
        for c in np.unique(g.dt_cls):
            d, t = g.dt_cls == c, g.gt_cls == c
            outcome = match_detections(g.dt_boxes[d], g.dt_scores[d], g.gt_boxes[t], g.gt_crowd[t])
            keep = outcome >= 0
            scores[c].append(g.dt_scores[d][keep])
            hits[c].append(outcome[keep])
    precision = np.zeros((nc, len(CONF_GRID)))
    recall = np.zeros((nc, len(CONF_GRID)))
    for c in range(nc):
        if not n_gt[c] or not scores[c]:
            continue
        s, h = np.concatenate(scores[c]), np.concatenate(hits[c])
        order = np.argsort(-s, kind="stable")
        s, tp = s[order], np.cumsum(h[order])
        n_det = np.arange(1, len(s) + 1)
        # detections with score >= threshold, for every threshold of the grid (scores sorted descending)
        n_above = np.searchsorted(-s, -CONF_GRID, side="right")
        tp_above = np.where(n_above > 0, tp[np.maximum(n_above - 1, 0)], 0)
        recall[c] = tp_above / n_gt[c]
        precision[c] = np.where(n_above > 0, tp_above / n_det[np.maximum(n_above - 1, 0)], 1.0)
    return precision, recall, n_gt


def confusion_matrix(groups: dict[Any, ImageBoxes], nc: int, *, conf: float = 0.25,
                     iou_thr: float = PR_IOU) -> np.ndarray:
    """Counts ``(nc + 1, nc + 1)``: rows = predicted class, columns = true class; index ``nc`` is background.

    Detections with score >= ``conf`` are matched to non-crowd ground truth regardless of class, greedily by
    IoU (>= ``iou_thr``); unmatched detections count in the background column, missed objects in the
    background row.
    """
    matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    for g in groups.values():
        gt_boxes, gt_cls = g.gt_boxes[~g.gt_crowd], g.gt_cls[~g.gt_crowd]
        keep = g.dt_scores >= conf
        dt_boxes, dt_cls = g.dt_boxes[keep], g.dt_cls[keep]
        gt_done, dt_done = np.zeros(len(gt_cls), bool), np.zeros(len(dt_cls), bool)
        if len(gt_cls) and len(dt_cls):
            iou = _iou(dt_boxes, gt_boxes)
            pairs = np.argwhere(iou >= iou_thr)
            for d, t in pairs[np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")]:
                if not dt_done[d] and not gt_done[t]:
                    dt_done[d] = gt_done[t] = True
                    matrix[dt_cls[d], gt_cls[t]] += 1
        np.add.at(matrix, (nc, gt_cls[~gt_done]), 1)
        np.add.at(matrix, (dt_cls[~dt_done], nc), 1)
    return matrix


# --------------------------------------------------------------------------------------------- table
def format_table(metrics: DetectionMetrics) -> str:
    """Per-class table (images, instances, P, R, AP50, AP50-95, APs, APm, APl) with an 'all' row first."""
    s = metrics.summary
    width = max(12, *(len(n) for n in metrics.names))
    cols = ("Images", "Instances", "P", "R", "AP50", "AP50-95", "APs", "APm", "APl")
    lines = [f"{'Class':>{width}}" + "".join(f"{c:>10}" for c in cols)]

    def row(name, images, instances, values):
        cells = "".join(f"{'-' if v is None else f'{v:.3f}':>10}" for v in values)
        return f"{name:>{width}}{images:>10}{instances:>10}{cells}"

    lines.append(row("all", s["images"], s["instances"],
                     (s["precision"], s["recall"], s["map50"], s["map"], s["aps"], s["apm"], s["apl"])))
    for name, c in s["per_class"].items():
        lines.append(row(name, c["images"], c["instances"],
                         (c["precision"], c["recall"], c["ap50"], c["ap"], c["aps"], c["apm"], c["apl"])))
    labels = {"ar1": "AR1", "ar10": "AR10", "ar": f"AR{s['max_dets']}", "ars": "ARs", "arm": "ARm", "arl": "ARl"}
    ar = " ".join(f"{label} {'-' if s[k] is None else f'{s[k]:.3f}'}" for k, label in labels.items())
    lines.append(f"mAP75 {s['map75']:.3f}  {ar}  (P/R at conf {s['conf_best']:.3f}, best mean F1 {s['f1']:.3f})")
    return "\n".join(lines)
