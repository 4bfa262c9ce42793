"""YOLO txt labels: parsing, validation against the image, and the label cache.

A label file holds one ``class cx cy w h`` row per box, normalized to 0..1. Rules:

* a row with the wrong field count, a non-number, a class outside ``0..nc-1`` or a box more than
  ``CLIP_TOLERANCE`` outside the image makes the whole image unusable (we cannot know what the row
  meant, and keeping the image would teach an unlabelled object as background);
* a box slightly outside the image is clipped, a box under 1 px after clipping is dropped,
  duplicate rows are removed;
* a missing or empty label file means a background image.

Everything is counted in a ProblemReport with the file name.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import UserError
from ..utils.files import write_atomic
from .boxes import xywh_to_xyxy, xyxy_to_xywh
from .cache import cache_root, is_writable_dir
from .image import ImageError, inspect_image
from .report import ProblemReport

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = 1
CLIP_TOLERANCE = 0.05  # box corners up to 5 % of the image size outside it are clipped
MIN_BOX_PX = 1.0  # boxes narrower or lower than this after clipping are dropped
ROUNDING_EPS = 1e-5  # overshoot from rounding normalized values is clipped without a report


class LabelError(UserError):
    """A label file that makes its image unusable; ``kind`` is a ProblemReport kind."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def label_file_for(im_file: str | Path) -> Path:
    """``.../images/<split>/x.jpg`` -> ``.../labels/<split>/x.txt`` (last ``images`` folder of the path);
    images outside an ``images`` folder keep their labels next to them."""
    parts = list(Path(im_file).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_label_text(text: str, nc: int | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Rows of a YOLO label file -> ``(cls (n,), xyxy (n, 4) normalized, row numbers)``.

    Raises LabelError naming the first bad row.
    """
    cls, boxes, rows = [], [], []
    for row, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            hint = " (a polygon row? only boxes are supported)" if len(fields) > 5 and len(fields) % 2 else ""
            raise LabelError("bad_label_row", f"row {row}: {len(fields)} fields, expected 5 "
                                              f"(class cx cy w h){hint}: '{line.strip()[:60]}'")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise LabelError("bad_label_row", f"row {row}: not a number in '{line.strip()[:60]}'") from None
        if not all(math.isfinite(v) for v in values):
            raise LabelError("bad_label_row", f"row {row}: non-finite value in '{line.strip()[:60]}'")
        c, cx, cy, w, h = values
        if c != int(c):
            raise LabelError("bad_label_row", f"row {row}: class id {fields[0]} is not an integer")
        if c < 0 or (nc is not None and c >= nc):
            valid = f"0..{nc - 1}" if nc is not None else "0 or more"
            raise LabelError("class_out_of_range", f"row {row}: class {int(c)} outside {valid}")
        if w < 0 or h < 0:
            raise LabelError("bad_label_row", f"row {row}: negative width or height ({w}, {h})")
        cls.append(c)
        boxes.append((cx, cy, w, h))
        rows.append(row)
    return np.array(cls, np.float32), xywh_to_xyxy(np.array(boxes, np.float32)), rows


def clean_boxes(cls: np.ndarray, xyxy: np.ndarray, where: list[str], shape: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Clip slightly-outside boxes, drop degenerate and duplicate ones.

    ``xyxy`` is normalized, ``shape`` the image (h, w), ``where`` names each box in messages
    (``"row 3"``). Returns the kept ``cls``, ``xyxy`` and the ``(kind, message)`` fixes made.
    Raises LabelError for a box far outside the image.
    """
    fixes: list[tuple[str, str]] = []
    far = ((xyxy < -CLIP_TOLERANCE) | (xyxy > 1 + CLIP_TOLERANCE)).any(1)
    if far.any():
        i = int(np.argmax(far))
        x1, y1, x2, y2 = xyxy[i]
        raise LabelError("box_outside_image", f"{where[i]}: box x {x1:.3f}..{x2:.3f}, y {y1:.3f}..{y2:.3f} "
                                              f"reaches more than {CLIP_TOLERANCE:.0%} beyond the 0..1 image")
    for i in np.flatnonzero(((xyxy < -ROUNDING_EPS) | (xyxy > 1 + ROUNDING_EPS)).any(1)):
        fixes.append(("box_clipped", f"{where[i]}: clipped to the image"))
    xyxy = xyxy.clip(0, 1)
    h, w = shape
    size_px = (xyxy[:, 2:] - xyxy[:, :2]) * np.array([w, h], np.float32)
    keep = (size_px >= MIN_BOX_PX).all(1)
    for i in np.flatnonzero(~keep):
        fixes.append(("degenerate_box", f"{where[i]}: box {size_px[i, 0]:.2f} x {size_px[i, 1]:.2f} px dropped"))
    seen: set[tuple] = set()
    for i in np.flatnonzero(keep):
        key = (int(cls[i]), *np.round(xyxy[i], 6).tolist())
        if key in seen:
            keep[i] = False
            fixes.append(("duplicate_box", f"{where[i]}: repeats an earlier box"))
        seen.add(key)
    return cls[keep], xyxy[keep], fixes


def verify_sample(im_file: str | Path, nc: int | None = None) -> tuple[dict | None, ProblemReport]:
    """Check one image and its label file.

    Returns ``(label, report)``; ``label`` is ``{"im_file", "shape", "cls", "bboxes"}`` (normalized xywh)
    or None when the image cannot be used.
    """
    im_file, report = Path(im_file), ProblemReport()
    try:
        shape, note = inspect_image(im_file)
    except ImageError as e:
        report.add(e.kind, im_file, str(e))
        return None, report
    if note:
        report.add("converted_image", im_file, note)
    lb_file = label_file_for(im_file)
    cls, xyxy = np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
    if not lb_file.is_file():
        report.add("missing_label", im_file, f"no {lb_file.name} (background image)")
    else:
        try:
            text = lb_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            report.add("unreadable_label", lb_file, f"cannot read as text ({type(e).__name__})")
            return None, report
        try:
            cls, xyxy, rows = parse_label_text(text, nc)
            cls, xyxy, fixes = clean_boxes(cls, xyxy, [f"row {r}" for r in rows], shape)
        except LabelError as e:
            report.add(e.kind, lb_file, str(e))
            return None, report
        for kind, message in fixes:
            report.add(kind, lb_file, message)
        if not text.strip():
            report.add("empty_label", lb_file, "empty label file (background image)")
    label = {"im_file": str(im_file), "shape": shape, "cls": cls.reshape(-1, 1), "bboxes": xyxy_to_xywh(xyxy)}
    return label, report


def load_labels(img_files: Iterable[str | Path], nc: int | None = None, *, use_cache: bool = True
                ) -> tuple[list[dict], ProblemReport]:
    """Verified labels of the usable images (in input order) and the problems found.

    Results are cached next to the label folder (or under the cache root when that folder is read-only)
    and reused while no image or label file changes (size and modification time).
    """
    img_files = [Path(f) for f in img_files]
    if not img_files:
        return [], ProblemReport()
    key = _cache_key(img_files, nc)
    candidates = _cache_files(img_files[0])
    if use_cache:
        for path in candidates:
            cached = _read_cache(path, key)
            if cached is not None:
                return cached
    labels, report = [], ProblemReport()
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for label, problems in pool.map(lambda f: verify_sample(f, nc), img_files):
            report.extend(problems)
            if label is not None:
                labels.append(label)
    if use_cache:
        _write_cache(candidates, key, labels, report)
    return labels, report


def _cache_key(img_files: list[Path], nc: int | None) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION} nc={nc}".encode())
    for im in img_files:
        for f in (im, label_file_for(im)):
            digest.update(os.fsencode(f))  # the name's bytes: a non-UTF-8 file name is hashed as it is on disk
            try:
                st = f.stat()
                digest.update(f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(b"|missing\n")
    return digest.hexdigest()


def _cache_files(first_image: Path) -> list[Path]:
    """Preferred cache file (beside the label folder) and the fallback under the cache root."""
    label_dir = label_file_for(first_image).parent.resolve()
    local = label_dir.with_name(f"{label_dir.name}.yololab.cache")
    fallback = cache_root() / "labels" / f"{hashlib.sha1(str(label_dir).encode()).hexdigest()[:16]}.cache"
    return [local, fallback]


def _read_cache(path: Path, key: str) -> tuple[list[dict], ProblemReport] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            files, shapes, counts = z["files"].tolist(), z["shapes"].tolist(), z["counts"]
            cls, boxes, report = z["cls"], z["boxes"], ProblemReport.from_dict(json.loads(str(z["report"])))
    except (OSError, KeyError, ValueError):
        return None
    starts = np.concatenate(([0], np.cumsum(counts)))
    labels = [{"im_file": f, "shape": tuple(s), "cls": cls[a:b].reshape(-1, 1), "bboxes": boxes[a:b]}
              for f, s, a, b in zip(files, shapes, starts[:-1], starts[1:])]
    return labels, report


def _write_cache(candidates: list[Path], key: str, labels: list[dict], report: ProblemReport) -> None:
    arrays = {
        "key": np.array(key),
        "files": np.array([lb["im_file"] for lb in labels], dtype=str),
        "shapes": np.array([lb["shape"] for lb in labels], np.int64).reshape(-1, 2),
        "counts": np.array([len(lb["cls"]) for lb in labels], np.int64),
        "cls": np.concatenate([lb["cls"].reshape(-1) for lb in labels] or [np.zeros(0)]).astype(np.float32),
        "boxes": np.concatenate([lb["bboxes"] for lb in labels] or [np.zeros((0, 4))]).astype(np.float32),
        "report": np.array(json.dumps(report.to_dict())),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    for path in candidates:
        if path.parent.exists() and not is_writable_dir(path.parent):
            continue
        try:
            write_atomic(path, lambda f: f.write(buffer.getvalue()))
            return
        except OSError as e:
            LOGGER.debug("label cache not written to %s: %s", path, e)
    LOGGER.warning("label cache could not be written (tried %s)", ", ".join(map(str, candidates)))
