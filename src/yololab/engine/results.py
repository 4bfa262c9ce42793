"""Per-image detection results: boxes, class names, an annotated image, YOLO txt and COCO json records."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..metrics import coco_records
from ..ops import xyxy2xywh
from ..plots import class_colour, text_colour


class Boxes:
    """Detections of one image in original-image pixels; ``data`` is ``(n, 6)``: x1, y1, x2, y2, conf, cls."""

    def __init__(self, data: torch.Tensor, orig_shape: tuple[int, int]):
        if data.ndim != 2 or data.shape[1] != 6:
            raise ValueError(f"boxes must be (n, 6) x1, y1, x2, y2, conf, cls; got shape {tuple(data.shape)}")
        self.data = data
        self.orig_shape = tuple(orig_shape)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index) -> "Boxes":
        return Boxes(self.data[index].view(-1, 6), self.orig_shape)

    def cpu(self) -> "Boxes":
        return Boxes(self.data.cpu(), self.orig_shape)

    @property
    def xyxy(self) -> torch.Tensor:
        return self.data[:, :4]

    @property
    def conf(self) -> torch.Tensor:
        return self.data[:, 4]

    @property
    def cls(self) -> torch.Tensor:
        return self.data[:, 5]

    @property
    def xywh(self) -> torch.Tensor:
        return xyxy2xywh(self.xyxy)

    @property
    def xyxyn(self) -> torch.Tensor:
        """xyxy divided by the image width and height."""
        h, w = self.orig_shape
        return self.xyxy / self.xyxy.new_tensor([w, h, w, h])

    @property
    def xywhn(self) -> torch.Tensor:
        """Centre-x, centre-y, width, height divided by the image width and height."""
        h, w = self.orig_shape
        return self.xywh / self.xywh.new_tensor([w, h, w, h])


class Results:
    """Detections of one image (or video frame) with the image they belong to.

    ``orig_img`` is the RGB uint8 image, ``boxes`` a :class:`Boxes`, ``names`` the class names,
    ``speed`` the preprocess / inference / postprocess milliseconds spent on this image.
    """

    def __init__(self, orig_img: np.ndarray, path: str, names: dict[int, str], boxes: torch.Tensor,
                 speed: dict[str, float] | None = None, frame: int | None = None):
        self.orig_img = orig_img
        self.orig_shape = orig_img.shape[:2]
        self.path = str(path)
        self.names = names
        self.boxes = Boxes(boxes.detach().float().cpu(), self.orig_shape)
        self.speed = speed or {}
        self.frame = frame

    def __len__(self) -> int:
        return len(self.boxes)

    def __repr__(self) -> str:
        where = f"{self.path}" + (f" frame {self.frame}" if self.frame is not None else "")
        return f"Results({where}: {self.summary_line()})"

    def summary_line(self) -> str:
        """``'2 car, 1 person'`` (or ``'no detections'``)."""
        if not len(self):
            return "no detections"
        counts = torch.bincount(self.boxes.cls.long())
        return ", ".join(f"{int(n)} {self.names.get(c, str(c))}" for c, n in enumerate(counts.tolist()) if n)

    def plot(self, line_width: int | None = None, labels: bool = True, conf: bool = True) -> np.ndarray:
        """The image (RGB uint8 copy) with one coloured box per detection and a ``name score`` label."""
        img = np.ascontiguousarray(self.orig_img).copy()
        h, w = img.shape[:2]
        lw = line_width or max(round((h + w) / 2 * 0.003), 2)
        font_scale, thickness = lw / 3, max(lw - 1, 1)
        for x1, y1, x2, y2, score, cls in self.boxes.data.tolist():
            colour = class_colour(cls)
            p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
            cv2.rectangle(img, p1, p2, colour, lw, cv2.LINE_AA)
            if not labels:
                continue
            text = self.names.get(int(cls), str(int(cls))) + (f" {score:.2f}" if conf else "")
            (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
            above = p1[1] - th - baseline - 2 >= 0
            top = p1[1] - th - baseline - 2 if above else p1[1]
            cv2.rectangle(img, (p1[0], top), (p1[0] + tw + 2, top + th + baseline + 2), colour, -1, cv2.LINE_AA)
            cv2.putText(img, text, (p1[0] + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        text_colour(colour), thickness, cv2.LINE_AA)
        return img

    def txt_lines(self, with_conf: bool = True) -> list[str]:
        """YOLO label lines ``cls cx cy w h [conf]`` with coordinates normalised to the image size."""
        lines = []
        for (cx, cy, bw, bh), score, cls in zip(self.boxes.xywhn.tolist(), self.boxes.conf.tolist(),
                                                self.boxes.cls.tolist()):
            line = f"{int(cls)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}"
            lines.append(line + (f" {score:.6f}" if with_conf else ""))
        return lines

    def coco_records(self, image_id: int | str) -> list[dict]:
        """COCO detection records ``{image_id, category_id, bbox: [x, y, w, h], score}`` (category = class index)."""
        return coco_records(self.boxes.data, image_id)

    def save(self, file: str | Path) -> Path:
        """Write the annotated image (format from the suffix)."""
        file = Path(file)
        file.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(file), cv2.cvtColor(self.plot(), cv2.COLOR_RGB2BGR)):
            raise ValueError(f"could not write image {file} (unsupported suffix?)")
        return file

    def save_txt(self, file: str | Path, with_conf: bool = True) -> Path:
        """Write the YOLO txt lines (an empty file when nothing was detected)."""
        file = Path(file)
        file.parent.mkdir(parents=True, exist_ok=True)
        lines = self.txt_lines(with_conf)
        file.write_text("\n".join(lines) + ("\n" if lines else ""))
        return file
