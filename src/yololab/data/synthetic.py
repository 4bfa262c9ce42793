"""The built-in synthetic small-object dataset (``data=synthetic``) and large scenes for sliced inference.

Four shape classes, each with its own colour, on noisy textured backgrounds; about half of the
objects are small (< 32 px), some overlap. Generation is deterministic from the seed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import yaml

from .cache import cache_root
from .records import ImageRecord, write_coco, write_label_file

SYNTHETIC_VERSION = 1  # bump when the generator changes: the cached folder name changes with it
NAMES = {0: "circle", 1: "square", 2: "triangle", 3: "cross"}
CLASS_COLOURS = ((220, 40, 40), (40, 190, 60), (40, 80, 230), (235, 200, 30))  # RGB per class
SIZE_BUCKETS = (((8, 28), 0.5), ((32, 90), 0.35), ((96, 150), 0.15))  # (object side range px, share)
MAX_OCCLUSION = 0.35  # an object may be hidden by later ones over at most this share of its box


def synthetic_dataset(root: str | Path | None = None) -> Path:
    """``data.yaml`` of the default synthetic set (200 train / 50 val at 320 px), generated on first use.

    Lives in ``<cache root>/datasets/synthetic-v<N>``; generated in a temporary folder and renamed into
    place, so concurrent processes never see a half-written set.
    """
    folder = Path(root) if root else cache_root() / "datasets" / f"synthetic-v{SYNTHETIC_VERSION}"
    if not (folder / "data.yaml").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            make_synthetic(tmp)
            tmp.rename(folder)
        except OSError:
            if not (folder / "data.yaml").is_file():  # not a lost race with another process
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder / "data.yaml"


def make_synthetic(root: str | Path, n_train: int = 200, n_val: int = 50, imgsz: int = 320, seed: int = 0, *,
                   objects: tuple[int, int] = (3, 9), small_share: float = 0.5) -> Path:
    """Write a YOLO-layout dataset (``images/``, ``labels/``, ``data.yaml``) plus the COCO json of val.

    Images are ``imgsz`` square, except every fourth one which is ``imgsz`` wide and 3/4 as high.
    ``objects`` is the (min, max) object count per image; ``small_share`` the share of objects under 32 px.
    Returns the ``data.yaml`` path.
    """
    root = Path(root)
    shares = _bucket_shares(small_share)
    for split, count in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        records = []
        for i in range(count):
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, i])
            h, w = (imgsz, imgsz) if i % 4 else (imgsz * 3 // 4, imgsz)
            img, cls, boxes = _render_scene(rng, h, w, int(rng.integers(objects[0], objects[1] + 1)), shares)
            im_file = root / "images" / split / f"{split}_{i:04d}.jpg"
            cv2.imwrite(str(im_file), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            write_label_file(root / "labels" / split / f"{im_file.stem}.txt", cls, boxes, w, h)
            records.append(ImageRecord(im_file, h, w, cls.astype(np.int64), boxes))
        if split == "val":
            write_coco(records, NAMES, root / "annotations" / "instances_val.json")
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                         "names": dict(NAMES)}, sort_keys=False))
    return data_yaml


def make_large_scene(height: int = 1080, width: int = 1920, n_objects: int = 40,
                     object_px: tuple[int, int] = (8, 24), seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A large RGB image with many tiny objects: ``(img, cls (n,), boxes (n, 4) xyxy pixels)``."""
    rng = np.random.default_rng([seed, 2])
    return _render_scene(rng, height, width, n_objects, [(object_px, 1.0)])


def _bucket_shares(small_share: float) -> list[tuple[tuple[int, int], float]]:
    """SIZE_BUCKETS with the small share replaced and the others rescaled to fill the rest."""
    if not 0 <= small_share <= 1:
        raise ValueError(f"small_share must be within 0..1, got {small_share}")
    rest = sum(p for _, p in SIZE_BUCKETS[1:])
    return [(SIZE_BUCKETS[0][0], small_share)] + [(r, p / rest * (1 - small_share)) for r, p in SIZE_BUCKETS[1:]]


def _render_scene(rng: np.random.Generator, h: int, w: int, n_objects: int,
                  buckets: list[tuple[tuple[int, int], float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img = _background(rng, h, w)
    cls_list, boxes = [], np.zeros((0, 4), np.float32)
    probs = np.array([p for _, p in buckets])
    for _ in range(n_objects):
        lo, hi = buckets[rng.choice(len(buckets), p=probs / probs.sum())][0]
        hi = min(hi, 0.9 * min(h, w))  # small images cap the larger buckets
        side = float(rng.uniform(min(lo, hi), hi))
        box = _place(rng, boxes, side * rng.uniform(0.8, 1.25), side, h, w)
        if box is None:
            continue
        c = int(rng.integers(len(NAMES)))
        _draw_shape(img, c, box, rng)
        cls_list.append(c)
        boxes = np.concatenate((boxes, box[None]))
    return img, np.array(cls_list, np.float32), boxes


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Muted low-frequency colour blotches, a few grey stripes and pixel noise."""
    base = (rng.uniform(70, 170) + rng.normal(0, 12, 3)).astype(np.int16)
    blotches = cv2.resize(rng.normal(0, 22, (6, 6, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img = blotches.astype(np.int16) + base + rng.integers(-16, 17, (h, w, 3), dtype=np.int16)
    for _ in range(int(rng.integers(2, 6))):
        p1 = (int(rng.integers(w)), int(rng.integers(h)))
        p2 = (int(rng.integers(w)), int(rng.integers(h)))
        cv2.line(img, p1, p2, (int(rng.integers(60, 190)),) * 3, int(rng.integers(1, 4)))
    return img.clip(0, 255).astype(np.uint8)


def _place(rng: np.random.Generator, existing: np.ndarray, bw: float, bh: float, h: int, w: int,
           tries: int = 30) -> np.ndarray | None:
    """A random box inside the image that hides at most MAX_OCCLUSION of each earlier box, or None."""
    bw, bh = min(bw, w - 2), min(bh, h - 2)
    for _ in range(tries):
        x1, y1 = rng.uniform(1, w - 1 - bw), rng.uniform(1, h - 1 - bh)
        box = np.array([x1, y1, x1 + bw, y1 + bh], np.float32)
        if len(existing) == 0:
            return box
        iw = (np.minimum(existing[:, 2], box[2]) - np.maximum(existing[:, 0], box[0])).clip(0)
        ih = (np.minimum(existing[:, 3], box[3]) - np.maximum(existing[:, 1], box[1])).clip(0)
        area = (existing[:, 2] - existing[:, 0]) * (existing[:, 3] - existing[:, 1])
        if (iw * ih <= MAX_OCCLUSION * area).all():
            return box
    return None


def _draw_shape(img: np.ndarray, c: int, box: np.ndarray, rng: np.random.Generator) -> None:
    """Draw class ``c`` filling ``box`` (its exact bounding box) in the class colour with slight jitter."""
    colour = tuple(float(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in CLASS_COLOURS[c])
    shift = 4  # sub-pixel precision bits of OpenCV drawing
    x1, y1, x2, y2 = (box * (1 << shift)).round().astype(np.int32)
    aa = cv2.LINE_AA
    if NAMES[c] == "circle":
        cv2.ellipse(img, ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, colour,
                    -1, aa, shift)
        return
    if NAMES[c] == "square":
        polygons = [[(x1, y1), (x2, y1), (x2, y2), (x1, y2)]]
    elif NAMES[c] == "triangle":
        polygons = [[(x1, y2), (x2, y2), ((x1 + x2) // 2, y1)]]
    else:  # cross: two bars a third of the box thick
        tx, ty = (x2 - x1) // 3, (y2 - y1) // 3
        polygons = [[(x1 + tx, y1), (x2 - tx, y1), (x2 - tx, y2), (x1 + tx, y2)],
                    [(x1, y1 + ty), (x2, y1 + ty), (x2, y2 - ty), (x1, y2 - ty)]]
    for polygon in polygons:
        cv2.fillConvexPoly(img, np.array(polygon, np.int32), colour, aa, shift)
