"""One image's boxes (``ImageRecord``) and the file writers shared by the format converters and the synthetic set.

``coco_image_ids`` is the single image-id rule of every COCO file yololab writes: converted sets, the ground
truth built by ``metrics`` and the predictions of the engines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np


@dataclass
class ImageRecord:
    """One image and its boxes."""

    file: Path
    height: int
    width: int
    cls: np.ndarray  # (n,) int64 class indices
    boxes: np.ndarray  # (n, 4) float32 xyxy pixels


def write_label_file(path: Path, cls: np.ndarray, boxes: np.ndarray, width: int, height: int) -> None:
    """A YOLO txt label from xyxy pixel boxes (6 decimals)."""
    rows = [f"{int(c)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
            f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"
            for c, (x1, y1, x2, y2) in zip(cls, boxes)]
    path.write_text("\n".join(rows) + ("\n" if rows else ""))


def coco_image_ids(files: Iterable[str | Path]) -> dict[str, int]:
    """The image ids of every COCO file yololab writes (converted sets, ground truth, predictions).

    When every file stem is a distinct number (COCO's own naming, ``000000000139.jpg``), the id is that number;
    otherwise the ids are 1..N in file-name order. Keys are the files as given (``str``).
    """
    files = [str(f) for f in files]
    stems = [Path(f).stem for f in files]
    if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return {f: int(s) for f, s in zip(files, stems)}
    return {f: i for i, f in enumerate(sorted(files, key=lambda f: (Path(f).name, f)), 1)}


def write_coco(records: list[ImageRecord], names: dict[int, str], json_path: str | Path) -> Path:
    """A COCO detection json: image ids by ``coco_image_ids``, category_id = class index, area = w*h."""
    json_path = Path(json_path)
    ids = coco_image_ids(r.file for r in records)
    images, annotations = [], []
    for r in sorted(records, key=lambda x: ids[str(x.file)]):
        image_id = ids[str(r.file)]
        images.append({"id": image_id, "file_name": r.file.name, "width": int(r.width), "height": int(r.height)})
        for c, (x1, y1, x2, y2) in zip(r.cls, r.boxes.tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(c),
                                "bbox": [round(x1, 3), round(y1, 3), round(w, 3), round(h, 3)],
                                "area": round(w * h, 3), "iscrowd": 0})
    categories = [{"id": int(i), "name": n, "supercategory": "none"} for i, n in sorted(names.items())]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_path
