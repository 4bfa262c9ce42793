"""Test-set noise: COCO AP recomputed exactly on bootstrap resamples of the validation images.

COCO matching runs once per run (``MatchedStats``: for every image, class, area range and IoU threshold, which
detections are true positives, false positives or ignored, and how many ground truth boxes count). A resample is a
vector of image weights (how often each image was drawn). Because the precision-recall curve only changes at true
positives, AP on a resample needs, for each true positive, the weighted number of true and false positives ranked
at or before it: two matrix products ``weights @ counts``. The result equals COCO's own evaluation of the resampled
set (images repeated as often as drawn), up to the order of detections whose scores tie inside one image.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..metrics import check_ground_truth, check_predictions

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = ((0.0, 1e10), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e10))  # all, small, medium, large
METRIC_SLICES = {"map": (0, None), "map50": (0, 0), "aps": (1, None), "apm": (2, None), "apl": (3, None)}
# metric -> (area range index, IoU threshold index or None for the mean over 0.50:0.95)


@dataclass
class _Curve:
    """One class x area range x IoU threshold: per image, the true and false positives ranked at or before each
    true positive (``(images, true positives)``, float32 counts, exact below 2**24)."""

    tp_counts: np.ndarray
    fp_counts: np.ndarray


class MatchedStats:
    """A run's detections matched to the ground truth the way COCO does, ready to score any image resample.

    ``weights`` (``(B, images)``, images in ascending id order) give each image's multiplicity; ``metrics`` returns
    mAP50-95, mAP50, APs, APm, APl per resample (NaN where no ground truth box counts, like COCO's -1).
    """

    def __init__(self, gt: dict, predictions: list[dict], max_dets: int = 100):
        check_ground_truth(gt)
        check_predictions(gt, predictions)
        self.image_ids = sorted(im["id"] for im in gt["images"])
        self.cat_ids = sorted(c["id"] for c in gt["categories"])
        matched = _match_all(gt, predictions, self.image_ids, self.cat_ids, max_dets)
        self.gt_counts = np.stack([m[0] for m in matched]).reshape(len(self.cat_ids), len(AREA_RANGES), -1)
        self.curves = [[_curves(*m[1:], len(self.image_ids)) for m in matched[i::len(AREA_RANGES)]]
                       for i in range(len(AREA_RANGES))]  # [area][class][iou]

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    def metrics(self, weights: np.ndarray, names: tuple[str, ...] = tuple(METRIC_SLICES)) -> dict[str, np.ndarray]:
        """COCO AP metrics (fractions) of each weighted resample: ``{name: (B,)}``."""
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float32))
        if weights.shape[1] != self.n_images:
            raise ValueError(f"weights give {weights.shape[1]} images, the ground truth has {self.n_images}")
        cache: dict[tuple[int, int, int], np.ndarray] = {}
        out = {}
        for name in names:
            area, iou = METRIC_SLICES[name]
            ious = range(len(IOU_THRESHOLDS)) if iou is None else (iou,)
            per_class = []
            for k in range(len(self.cat_ids)):
                npig = weights.astype(np.float64) @ self.gt_counts[k, area]
                for t in ious:
                    if (area, k, t) not in cache:
                        cache[area, k, t] = _average_precision(weights, self.curves[area][k][t], npig)
                per_class.append(np.mean([cache[area, k, t] for t in ious], 0))
            values = np.stack(per_class)  # (K, B), NaN for classes without counted ground truth
            valid = ~np.isnan(values)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name] = np.where(valid.any(0), np.nansum(values, 0) / valid.sum(0), np.nan)
        return out


def load_predictions(run_dir: str | Path, name: str = "predictions.json.gz") -> list[dict] | None:
    """A run's kept COCO predictions (gzip'd json, or plain ``predictions.json``), or None when it has none."""
    run_dir = Path(run_dir)
    if (run_dir / name).is_file():
        return json.loads(gzip.decompress((run_dir / name).read_bytes()))
    if (run_dir / "predictions.json").is_file():
        return json.loads((run_dir / "predictions.json").read_text())
    return None


def image_weights(rng: np.random.Generator, n_images: int, n_resamples: int) -> np.ndarray:
    """``(n_resamples, n_images)`` multiplicities of images drawn with replacement (each row sums to n_images)."""
    draws = rng.integers(0, n_images, size=(n_resamples, n_images))
    weights = np.zeros((n_resamples, n_images), dtype=np.float32)
    np.add.at(weights, (np.arange(n_resamples)[:, None], draws), 1)
    return weights


# ------------------------------------------------------------------------------------------ AP from counts
def _average_precision(weights: np.ndarray, curve: _Curve, npig: np.ndarray) -> np.ndarray:
    """101-point interpolated AP per resample (NaN where ``npig`` is 0), COCO's accumulate on weighted counts."""
    n_tp = curve.tp_counts.shape[1]
    ap = np.zeros(len(weights))
    if n_tp:
        tp = (weights @ curve.tp_counts).astype(np.float64)  # (B, n_tp), integer-valued
        fp = (weights @ curve.fp_counts).astype(np.float64)
        precision = tp / (tp + fp + np.spacing(1))
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # best precision at recall >= here
        first = _first_reaching(tp.astype(np.int64), _counts_needed(npig))  # (B, R) first TP at each recall point
        reached = first < n_tp
        q = np.take_along_axis(envelope, np.minimum(first, n_tp - 1), axis=1)
        ap = np.where(reached, q, 0.0).mean(1)
    return np.where(npig > 0, ap, np.nan)


def _counts_needed(npig: np.ndarray) -> np.ndarray:
    """Smallest true-positive count m with ``m / npig >= r`` in floating point, per resample and recall point."""
    n = np.maximum(npig, 1)[:, None]
    m = np.ceil(RECALL_POINTS[None] * n)
    m = np.where((m - 1 >= 0) & ((m - 1) / n >= RECALL_POINTS[None]), m - 1, m)
    m = np.where(m / n < RECALL_POINTS[None], m + 1, m)
    return m.astype(np.int64)


def _first_reaching(tp: np.ndarray, needed: np.ndarray) -> np.ndarray:
    """Per row, the first index where the non-decreasing integer ``tp`` reaches each ``needed`` value (row-wise
    searchsorted done at once: rows shifted apart by an integer offset, so the comparison stays exact)."""
    rows, n = tp.shape
    span = int(max(tp.max(initial=0), needed.max(initial=0))) + 2
    offset = np.arange(rows, dtype=np.int64)[:, None] * span
    flat = np.searchsorted((tp + offset).ravel(), (needed + offset).ravel(), side="left")
    return flat.reshape(needed.shape) - np.arange(rows)[:, None] * n


def _curves(images: np.ndarray, scores: np.ndarray, tp: np.ndarray, ignored: np.ndarray,
            n_images: int) -> list[_Curve]:
    """Per IoU threshold, the count matrices of one class and area range from its matched detections."""
    order = np.argsort(-scores, kind="stable")  # COCO's global ranking (ties keep image order)
    images, tp, ignored = images[order], tp[:, order], ignored[:, order]
    curves = []
    for t in range(len(IOU_THRESHOLDS)):
        keep = ~ignored[t]
        img, hit = images[keep], tp[t, keep]
        tp_images, fp_images = img[hit], img[~hit]
        tp_rank = np.flatnonzero(hit)
        fp_before = np.searchsorted(np.flatnonzero(~hit), tp_rank)  # false positives ranked above each TP
        tp_counts = np.cumsum(_one_hot(tp_images, n_images), axis=1)
        fp_cumulative = np.concatenate((np.zeros((n_images, 1), np.float32),
                                        np.cumsum(_one_hot(fp_images, n_images), axis=1)), axis=1)
        curves.append(_Curve(tp_counts, fp_cumulative[:, fp_before]))
    return curves


def _one_hot(images: np.ndarray, n_images: int) -> np.ndarray:
    out = np.zeros((n_images, len(images)), dtype=np.float32)
    out[images, np.arange(len(images))] = 1
    return out


# ------------------------------------------------------------------------------------------ COCO matching
def _match_all(gt: dict, predictions: list[dict], image_ids: list, cat_ids: list,
               max_dets: int) -> list[tuple]:
    """For each class and area range (class-major): ``(gt counted per image, det image, det score, det TP (T, m),
    det ignored (T, m))`` with detections in image order, each image's sorted by score."""
    img_index = {i: n for n, i in enumerate(image_ids)}
    cat_index = {c: k for k, c in enumerate(cat_ids)}
    gts: dict[tuple[int, int], list] = {}
    dts: dict[tuple[int, int], list] = {}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        area = a["area"] if "area" in a else w * h
        gts.setdefault((img_index[a["image_id"]], cat_index[a["category_id"]]), []).append(
            (x, y, x + w, y + h, area, bool(a.get("iscrowd", 0))))
    for p in predictions:
        x, y, w, h = p["bbox"]
        dts.setdefault((img_index[p["image_id"]], cat_index[p["category_id"]]), []).append(
            (x, y, x + w, y + h, w * h, p["score"]))
    out = []
    for k in range(len(cat_ids)):
        per_area = [([], [], [], [], []) for _ in AREA_RANGES]
        for i in range(len(image_ids)):
            g = np.asarray(gts.get((i, k), []), dtype=np.float64).reshape(-1, 6)
            d = np.asarray(dts.get((i, k), []), dtype=np.float64).reshape(-1, 6)
            d = d[np.argsort(-d[:, 5], kind="stable")[:max_dets]]
            iou = _box_iou(d[:, :4], g[:, :4], g[:, 5].astype(bool))
            for a, area_range in enumerate(AREA_RANGES):
                counted, tp, ignored = _match_image(iou, g[:, 4], g[:, 5].astype(bool), d[:, 4], area_range)
                store = per_area[a]
                store[0].append(counted)
                store[1].append(np.full(len(d), i))
                store[2].append(d[:, 5])
                store[3].append(tp)
                store[4].append(ignored)
        for counted, images, scores, tp, ignored in per_area:
            out.append((np.asarray(counted, dtype=np.float64), np.concatenate(images).astype(np.int64),
                        np.concatenate(scores), np.concatenate(tp, 1), np.concatenate(ignored, 1)))
    return out


def _box_iou(dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """``(m, n)`` IoU of corner boxes; against a crowd box the union is the detection's own area (COCO)."""
    lt = np.maximum(dets[:, None, :2], gts[None, :, :2])
    rb = np.minimum(dets[:, None, 2:], gts[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_d = np.prod(dets[:, 2:] - dets[:, :2], 1)[:, None]
    area_g = np.prod(gts[:, 2:] - gts[:, :2], 1)[None]
    union = np.where(crowd[None], area_d, area_d + area_g - inter)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match_image(iou: np.ndarray, gt_area: np.ndarray, crowd: np.ndarray, det_area: np.ndarray,
                 area_range: tuple[float, float]) -> tuple[int, np.ndarray, np.ndarray]:
    """COCO's greedy matching of one image and class (detections sorted by score) in one area range.

    Returns the number of counted ground truth boxes and, per IoU threshold and detection, TP and ignored flags.
    Each detection takes the unmatched counted box of highest IoU (the later one on ties, as COCO); only without
    one does it try the ignored boxes (crowd regions may be matched repeatedly); a detection matched to an ignored
    box, or unmatched and outside the area range, is ignored.
    """
    lo, hi = area_range
    gt_ignored = crowd | (gt_area < lo) | (gt_area > hi)
    m = iou.shape[0]
    tp = np.zeros((len(IOU_THRESHOLDS), m), dtype=bool)
    ignored = np.zeros((len(IOU_THRESHOLDS), m), dtype=bool)
    outside = (det_area < lo) | (det_area > hi)
    for t, thr in enumerate(IOU_THRESHOLDS):
        thr = min(thr, 1 - 1e-10)
        taken = np.zeros(iou.shape[1], dtype=bool)
        for d in np.flatnonzero((iou >= thr).any(1)) if iou.size else ():
            match = -1
            for pool in (~gt_ignored, gt_ignored):
                candidates = np.where(pool & ~(taken & ~crowd) & (iou[d] >= thr), iou[d], -1.0)
                if candidates.max() >= thr:
                    match = len(candidates) - 1 - int(np.argmax(candidates[::-1]))  # the last of equal IoUs
                    break
            if match >= 0:
                taken[match] = True
                tp[t, d] = not gt_ignored[match]
                ignored[t, d] = gt_ignored[match]
        ignored[t] |= ~tp[t] & ~ignored[t] & outside
    return int((~gt_ignored).sum()), tp, ignored
