"""NumPy box conversions used by the data pipeline (torch versions live in ``yololab.ops``)."""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(n, 4)`` centre-x, centre-y, width, height -> x1, y1, x2, y2 (any units)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    half = boxes[:, 2:] / 2
    return np.concatenate((boxes[:, :2] - half, boxes[:, :2] + half), 1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``(n, 4)`` x1, y1, x2, y2 -> centre-x, centre-y, width, height (any units)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate(((boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]), 1)


def scale_boxes(boxes: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Multiply x coordinates by ``sx`` and y coordinates by ``sy`` (normalized <-> pixels)."""
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], dtype=np.float32)
