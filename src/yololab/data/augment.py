"""Letterbox and the training augmentations; every transform moves boxes together with pixels.

Inside this module boxes are ``(n, 4)`` float32 xyxy pixels and classes ``(n,)`` float32. Random
draws come from the ``numpy.random.Generator`` passed in, so a seeded generator gives identical output.
"""

from __future__ import annotations

import cv2
import numpy as np

PAD_VALUE = 114  # grey used for letterbox and mosaic borders
MIN_BOX_PX = 2.0  # boxes narrower or lower than this after a transform are dropped
MIN_VISIBLE = 0.1  # boxes keeping less than this share of their area after cropping are dropped


def letterbox(img: np.ndarray, new_shape: int | tuple[int, int] = 640, *, auto: bool = False, scaleup: bool = True,
              stride: int = 32, color: tuple[int, int, int] = (PAD_VALUE,) * 3
              ) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize keeping the aspect ratio, then pad to ``new_shape`` (int or (h, w)).

    ``auto`` pads only up to the next multiple of ``stride``; ``scaleup=False`` never enlarges.
    Returns ``(img, (gain_h, gain_w), (pad_w, pad_h))`` with ``x_new = x * gain_w + pad_w``.
    """
    h0, w0 = img.shape[:2]
    th, tw = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    r = min(th / h0, tw / w0)
    if not scaleup:
        r = min(r, 1.0)
    nw, nh = max(1, round(w0 * r)), max(1, round(h0 * r))
    if auto:
        th, tw = nh + (-nh) % stride, nw + (-nw) % stride
    if (nh, nw) != (h0, w0):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (th - nh) // 2, (tw - nw) // 2
    img = cv2.copyMakeBorder(img, top, th - nh - top, left, tw - nw - left, cv2.BORDER_CONSTANT, value=color)
    return img, (nh / h0, nw / w0), (left, top)


def resize_long_side(img: np.ndarray, size: int, *, smooth_downscale: bool = True) -> np.ndarray:
    """Resize so that the longer side equals ``size`` (area interpolation when shrinking, if ``smooth_downscale``)."""
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r == 1:
        return img
    interp = cv2.INTER_AREA if r < 1 and smooth_downscale else cv2.INTER_LINEAR
    return cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=interp)


def keep_boxes(before: np.ndarray, after: np.ndarray, min_px: float = MIN_BOX_PX,
               min_visible: float = MIN_VISIBLE) -> np.ndarray:
    """Mask of boxes still worth training on after a crop: ``after`` (clipped) vs ``before`` (unclipped)."""
    w, h = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    area_before = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1])
    return (w >= min_px) & (h >= min_px) & (w * h >= min_visible * area_before)


def clip_boxes(boxes: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """Clip xyxy boxes to the rectangle ``x1, y1, x2, y2``."""
    return np.stack((boxes[:, 0].clip(x1, x2), boxes[:, 1].clip(y1, y2),
                     boxes[:, 2].clip(x1, x2), boxes[:, 3].clip(y1, y2)), 1).astype(np.float32)


def mosaic4(tiles: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place four ``(img, cls, boxes)`` tiles around a random centre of a ``2*size`` square canvas.

    Tile k touches the centre with its bottom-right (k=0), bottom-left (1), top-right (2) or
    top-left (3) corner; parts beyond the canvas are cut and their boxes clipped or dropped.
    """
    if len(tiles) != 4:
        raise ValueError(f"mosaic4 needs 4 tiles, got {len(tiles)}")
    s2 = 2 * size
    canvas = np.full((s2, s2, 3), PAD_VALUE, np.uint8)
    xc, yc = (int(v) for v in rng.uniform(0.5 * size, 1.5 * size, 2))
    all_cls, all_boxes = [], []
    for k, (img, cls, boxes) in enumerate(tiles):
        h, w = img.shape[:2]
        left, top = k in (0, 2), k in (0, 1)
        x1, x2 = (max(xc - w, 0), xc) if left else (xc, min(xc + w, s2))
        y1, y2 = (max(yc - h, 0), yc) if top else (yc, min(yc + h, s2))
        sx, sy = (w - (x2 - x1) if left else 0), (h - (y2 - y1) if top else 0)
        canvas[y1:y2, x1:x2] = img[sy:sy + y2 - y1, sx:sx + x2 - x1]
        moved = boxes + np.array([x1 - sx, y1 - sy] * 2, np.float32)
        clipped = clip_boxes(moved, x1, y1, x2, y2)
        keep = keep_boxes(moved, clipped)
        all_cls.append(cls[keep])
        all_boxes.append(clipped[keep])
    return canvas, np.concatenate(all_cls), np.concatenate(all_boxes).reshape(-1, 4)


def random_affine(img: np.ndarray, cls: np.ndarray, boxes: np.ndarray, out_shape: tuple[int, int],
                  rng: np.random.Generator, *, degrees: float = 0.0, translate: float = 0.1, scale: float = 0.5,
                  shear: float = 0.0, perspective: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp ``img`` into ``out_shape`` (h, w) with a random rotation, scale, shear, translation and perspective
    (see ``random_affine_matrix``); boxes follow (see ``warp``)."""
    m = random_affine_matrix(rng, img.shape[:2], out_shape, degrees=degrees, translate=translate, scale=scale,
                             shear=shear, perspective=perspective)
    return warp(img, cls, boxes, m, out_shape)


def random_affine_matrix(rng: np.random.Generator, in_shape: tuple[int, int], out_shape: tuple[int, int], *,
                         degrees: float = 0.0, translate: float = 0.1, scale: float = 0.5, shear: float = 0.0,
                         perspective: float = 0.0) -> np.ndarray:
    """3x3 pixel transform: input centre to origin, perspective, rotation (+-degrees) with scale (1 +- scale),
    shear (+-degrees), then to the output centre shifted by up to ``translate`` of the output size."""
    (h_in, w_in), (h_out, w_out) = in_shape, out_shape
    to_origin = np.array([[1, 0, -w_in / 2], [0, 1, -h_in / 2], [0, 0, 1]], np.float64)
    persp = np.eye(3)
    persp[2, :2] = rng.uniform(-perspective, perspective, 2)
    rot_scale = np.eye(3)
    rot_scale[:2] = cv2.getRotationMatrix2D((0, 0), rng.uniform(-degrees, degrees), rng.uniform(1 - scale, 1 + scale))
    shear_m = np.eye(3)
    shear_m[0, 1], shear_m[1, 0] = np.tan(np.radians(rng.uniform(-shear, shear, 2)))
    to_out = np.eye(3)
    to_out[:2, 2] = np.array([w_out, h_out]) * (0.5 + rng.uniform(-translate, translate, 2))
    return to_out @ shear_m @ rot_scale @ persp @ to_origin


def warp(img: np.ndarray, cls: np.ndarray, boxes: np.ndarray, m: np.ndarray, out_shape: tuple[int, int]
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the 3x3 transform ``m`` to an image and its boxes, output ``out_shape`` (h, w).

    A box becomes the extent of its warped rectangle's part inside the output; boxes under ``MIN_BOX_PX``
    or keeping less than ``MIN_VISIBLE`` of their warped area are dropped.
    """
    h_out, w_out = out_shape
    if img.shape[:2] != (h_out, w_out) or not np.allclose(m, np.eye(3)):
        if m[2, :2].any():
            img = cv2.warpPerspective(img, m, (w_out, h_out), borderValue=(PAD_VALUE,) * 3)
        else:
            img = cv2.warpAffine(img, m[:2], (w_out, h_out), borderValue=(PAD_VALUE,) * 3)
    if len(boxes) == 0:
        return img, cls, boxes
    quads = _warp_corners(boxes, m)
    warped = np.concatenate((quads.min(1), quads.max(1)), 1).astype(np.float32)
    if m[0, 1] == 0 and m[1, 0] == 0 and not m[2, :2].any():  # still axis-aligned rectangles
        clipped = clip_boxes(warped, 0, 0, w_out, h_out)
    else:  # rotated/sheared: extent of the part of each quadrilateral that stays inside the image
        clipped = _clipped_extent(quads, w_out, h_out)
    keep = keep_boxes(warped, clipped)
    return img, cls[keep], clipped[keep]


def _warp_corners(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``(n, 4, 2)`` corners of each box (clockwise from top-left) after the 3x3 transform ``m``."""
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)
    pts = np.concatenate((corners, np.ones((len(corners), 1))), 1) @ m.T
    return (pts[:, :2] / pts[:, 2:3]).reshape(-1, 4, 2)


def _clipped_extent(quads: np.ndarray, w: float, h: float) -> np.ndarray:
    """xyxy extent of each convex quadrilateral intersected with the image ``[0, w] x [0, h]``.

    The extent is spanned by the quadrilateral's corners inside the image, the image corners inside the
    quadrilateral and the points where its edges cross the image border. Quadrilaterals that miss the
    image get an empty box.
    """
    n, size = len(quads), np.array([w, h], np.float64)
    points = [quads]
    valid = [((quads >= 0) & (quads <= size)).all(-1)]
    image_corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    start, edge = quads, np.roll(quads, -1, axis=1) - quads  # (n, 4, 2) edges start -> start + edge
    rel = image_corners[None, :, None, :] - start[:, None, :, :]  # (n, corner, edge, 2)
    cross = edge[:, None, :, 0] * rel[..., 1] - edge[:, None, :, 1] * rel[..., 0]
    points.append(np.broadcast_to(image_corners, (n, 4, 2)))
    valid.append((cross > 0).all(-1) | (cross < 0).all(-1))
    for axis, value in ((0, 0.0), (0, w), (1, 0.0), (1, h)):
        with np.errstate(divide="ignore", invalid="ignore"):  # edges parallel to this border never cross it
            t = np.where(edge[..., axis] != 0, (value - start[..., axis]) / edge[..., axis], -1.0)
        crossing = start + t[..., None] * edge
        other = crossing[..., 1 - axis]
        valid.append((t >= 0) & (t <= 1) & (other >= 0) & (other <= size[1 - axis]))
        points.append(crossing)
    points, valid = np.concatenate(points, 1), np.concatenate(valid, 1)
    lo = np.where(valid[..., None], points, np.inf).min(1)
    hi = np.where(valid[..., None], points, -np.inf).max(1)
    out = np.concatenate((lo, hi), 1)
    out[~valid.any(1)] = 0
    return out.clip(0, np.tile(size, 2)).astype(np.float32)


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hsv_h: float = 0.015, hsv_s: float = 0.7,
                hsv_v: float = 0.4) -> np.ndarray:
    """Random hue shift (fraction of the hue circle) and saturation/value gains (1 +- fraction) of an RGB image."""
    if not (hsv_h or hsv_s or hsv_v):
        return img
    shift = rng.uniform(-hsv_h, hsv_h) * 180  # OpenCV 8-bit hue spans 0..179
    gain_s, gain_v = 1 + rng.uniform(-1, 1, 2) * (hsv_s, hsv_v)
    x = np.arange(256, dtype=np.float32)
    lut_h = np.mod(x + shift, 180).astype(np.uint8)
    lut_s = np.clip(x * gain_s, 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gain_v, 0, 255).astype(np.uint8)
    h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    hsv = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flip_horizontal(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right."""
    w = img.shape[1]
    return cv2.flip(img, 1), np.stack((w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]), 1).reshape(-1, 4)


def flip_vertical(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror top-bottom."""
    h = img.shape[0]
    return cv2.flip(img, 0), np.stack((boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]), 1).reshape(-1, 4)


def mixup(a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray],
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blend two same-size ``(img, cls, boxes)`` samples with a Beta(32, 32) weight and keep both box sets."""
    if a[0].shape != b[0].shape:
        raise ValueError(f"mixup needs equal image shapes, got {a[0].shape} and {b[0].shape}")
    r = rng.beta(32.0, 32.0)
    img = (a[0].astype(np.float32) * r + b[0].astype(np.float32) * (1 - r)).round().astype(np.uint8)
    return img, np.concatenate((a[1], b[1])), np.concatenate((a[2], b[2])).reshape(-1, 4)
