"""Property tests: augmented boxes stay inside the image, move with their pixels, and degenerate ones go."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yololab.data.augment import (
    MIN_BOX_PX,
    MIN_VISIBLE,
    augment_hsv,
    flip_horizontal,
    flip_vertical,
    keep_boxes,
    letterbox,
    mixup,
    mosaic4,
    random_affine,
    random_affine_matrix,
)

# well separated colours, none close to the grey (114) background and padding
PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
                    (255, 255, 255), (0, 0, 0)], np.int16)
PROPERTY = settings(max_examples=30, deadline=None)


def solid_boxes_image(seed: int, h: int, w: int, n: int, first_colour: int = 0):
    """Grey image with up to ``n`` non-touching solid rectangles; class k has colour PALETTE[k]."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 114, np.uint8)
    boxes, cls = [], []
    for _ in range(n * 10):
        if len(boxes) == n:
            break
        bw, bh = rng.integers(12, max(13, w // 2)), rng.integers(12, max(13, h // 2))
        x1, y1 = rng.integers(0, w - bw + 1), rng.integers(0, h - bh + 1)
        box = np.array([x1, y1, x1 + bw, y1 + bh], np.float32)
        if any(box[0] < b[2] + 3 and b[0] < box[2] + 3 and box[1] < b[3] + 3 and b[1] < box[3] + 3 for b in boxes):
            continue
        k = first_colour + len(boxes)
        img[y1:y1 + bh, x1:x1 + bw] = PALETTE[k]
        boxes.append(box)
        cls.append(k)
    return img, np.array(cls, np.float32), np.array(boxes, np.float32).reshape(-1, 4)


def coverage(img: np.ndarray, k: int) -> np.ndarray:
    """Per pixel, the share of colour PALETTE[k] mixed into the grey background (0 where another colour shows)."""
    grey = np.float32(114)
    d = PALETTE[k].astype(np.float32) - grey
    rel = img.astype(np.float32) - grey
    share = (rel @ d) / (d @ d)
    residual = np.linalg.norm(rel - share[..., None] * d, axis=-1)
    off_line = residual > 3 + 0.3 * np.linalg.norm(rel, axis=-1)  # the deviation from grey is not towards colour k
    return np.where(off_line, 0, share.clip(0, 1))


def extent(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    return None if len(xs) == 0 else np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def assert_pixels_inside_boxes(img: np.ndarray, cls: np.ndarray, boxes: np.ndarray, tight: float | None) -> None:
    """Boxes lie in the image and are not degenerate; pixels mostly of a box's colour lie inside its box;
    with ``tight`` (axis-aligned transforms) the box also ends where the colour ends, within ``tight`` pixels
    (linear interpolation blurs edges over about the upscaling factor)."""
    h, w = img.shape[:2]
    edge = 1e-3  # float32 rounding of a box mapped onto the image border (96.00001 for 96)
    assert ((boxes >= -edge) & (boxes <= np.array([w, h, w, h]) + edge)).all(), "box outside the image"
    assert ((boxes[:, 2:] - boxes[:, :2]) >= MIN_BOX_PX).all(), "degenerate box kept"
    for k, box in zip(cls.astype(int), boxes):
        if (box[2:] - box[:2]).min() < 6:
            continue  # too few pixels to compare reliably
        cover = coverage(img, k)
        solid = extent(cover >= 0.5)
        assert solid is not None, f"box of colour {k} has no pixels"
        assert (solid[:2] >= box[:2] - 1).all() and (solid[2:] <= box[2:] + 1).all(), f"colour {k}: {solid} vs {box}"
        if tight:
            assert np.abs(extent(cover > 0.02) - box).max() <= tight, f"colour {k}: {extent(cover > 0.02)} vs {box}"


def warped_extent(box: np.ndarray, m: np.ndarray, w: float, h: float) -> np.ndarray | None:
    """Reference: extent of densely sampled points of ``box`` mapped by ``m`` that land inside ``w`` x ``h``."""
    xs, ys = np.meshgrid(np.arange(box[0], box[2] + 1e-3, 0.2), np.arange(box[1], box[3] + 1e-3, 0.2))
    pts = np.stack((xs.ravel(), ys.ravel(), np.ones(xs.size)), 1) @ m.T
    xy = pts[:, :2] / pts[:, 2:]
    xy = xy[((xy >= 0) & (xy <= (w, h))).all(1)]
    return None if len(xy) == 0 else np.concatenate((xy.min(0), xy.max(0)))


def assert_boxes_follow_transform(cls: np.ndarray, boxes: np.ndarray, cls2: np.ndarray, boxes2: np.ndarray,
                                  m: np.ndarray, w: int, h: int) -> None:
    """Each kept box is the visible extent of its warped source box; each dropped one was nearly degenerate
    or mostly outside."""
    kept = dict(zip(cls2.astype(int), boxes2))
    for k, box in zip(cls.astype(int), boxes):
        ref = warped_extent(box, m, w, h)
        if k in kept:
            assert ref is not None and np.abs(kept[k] - ref).max() <= 0.6, f"colour {k}: {kept[k]} vs {ref}"
        elif ref is not None:
            size = ref[2:] - ref[:2]
            corners = np.array([[box[0], box[1], 1], [box[2], box[1], 1], [box[2], box[3], 1], [box[0], box[3], 1]])
            warped = corners @ m.T
            warped = warped[:, :2] / warped[:, 2:]
            full_area = np.prod(warped.max(0) - warped.min(0))
            assert size.min() < MIN_BOX_PX + 0.6 or np.prod(size) < MIN_VISIBLE * full_area * 1.1, \
                f"colour {k} dropped although {size} px of it are visible"


affine_params = st.fixed_dictionaries({
    "degrees": st.floats(0, 45), "translate": st.floats(0, 0.3), "scale": st.floats(0, 0.5),
    "shear": st.floats(0, 10), "perspective": st.sampled_from([0.0, 0.0005]),
})


@PROPERTY
@given(seed=st.integers(0, 10_000), shape=st.sampled_from([(96, 128), (128, 96), (112, 112)]), params=affine_params)
def test_random_affine_moves_boxes_with_pixels(seed, shape, params):
    img, cls, boxes = solid_boxes_image(seed, *shape, n=4)
    m = random_affine_matrix(np.random.default_rng(seed), shape, (112, 112), **params)
    out, cls2, boxes2 = random_affine(img, cls, boxes, (112, 112), np.random.default_rng(seed), **params)
    assert out.shape == (112, 112, 3)
    axis_aligned = params["degrees"] == params["shear"] == params["perspective"] == 0
    assert_pixels_inside_boxes(out, cls2, boxes2, tight=1 + (1 + params["scale"]) / 2 if axis_aligned else None)
    assert_boxes_follow_transform(cls, boxes, cls2, boxes2, m, 112, 112)


@PROPERTY
@given(seed=st.integers(0, 10_000), size=st.sampled_from([64, 96]), params=affine_params)
def test_mosaic_then_affine_moves_boxes_with_pixels(seed, size, params):
    tiles = [solid_boxes_image(seed + t, size - 8 * t, size, n=2, first_colour=2 * t) for t in range(4)]
    canvas, cls, boxes = mosaic4(tiles, size, np.random.default_rng(seed))
    assert canvas.shape == (2 * size, 2 * size, 3)
    assert_pixels_inside_boxes(canvas, cls, boxes, tight=0)
    m = random_affine_matrix(np.random.default_rng(seed + 1), canvas.shape[:2], (size, size), **params)
    out, cls2, boxes2 = random_affine(canvas, cls, boxes, (size, size), np.random.default_rng(seed + 1), **params)
    assert_pixels_inside_boxes(out, cls2, boxes2, tight=None)
    assert_boxes_follow_transform(cls, boxes, cls2, boxes2, m, size, size)


@PROPERTY
@given(seed=st.integers(0, 10_000), shape=st.tuples(st.integers(20, 200), st.integers(20, 200)),
       target=st.sampled_from([64, (64, 96), (96, 64)]), auto=st.booleans(), scaleup=st.booleans())
def test_letterbox_maps_pixels_and_boxes(seed, shape, target, auto, scaleup):
    img, cls, boxes = solid_boxes_image(seed, *shape, n=3)
    out, (gain_h, gain_w), (pad_w, pad_h) = letterbox(img, target, auto=auto, scaleup=scaleup, stride=32)
    th, tw = (target, target) if isinstance(target, int) else target
    if auto:
        assert out.shape[0] % 32 == 0 and out.shape[1] % 32 == 0 and out.shape[0] <= th and out.shape[1] <= tw
    else:
        assert out.shape[:2] == (th, tw)
    if not scaleup:
        assert gain_h <= 1 + 1e-6 and gain_w <= 1 + 1e-6
    mapped = boxes * np.float32([gain_w, gain_h] * 2) + np.float32([pad_w, pad_h] * 2)
    big = ((mapped[:, 2:] - mapped[:, :2]) >= 8).all(1)
    assert_pixels_inside_boxes(out, cls[big], mapped[big], tight=1 + max(gain_h, gain_w) / 2)


@PROPERTY
@given(seed=st.integers(0, 10_000))
def test_flips_move_boxes_with_pixels_and_invert(seed):
    img, cls, boxes = solid_boxes_image(seed, 80, 120, n=4)
    for flip in (flip_horizontal, flip_vertical):
        out, moved = flip(img, boxes)
        assert_pixels_inside_boxes(out, cls, moved, tight=0)
        back, restored = flip(out, moved)
        assert np.array_equal(back, img) and np.allclose(restored, boxes)


@PROPERTY
@given(boxes=st.lists(st.tuples(st.floats(-50, 150), st.floats(-50, 150), st.floats(0, 40), st.floats(0, 40)),
                      max_size=12), seed=st.integers(0, 1000))
def test_degenerate_and_outside_boxes_are_dropped(boxes, seed):
    xyxy = np.array([(x, y, x + w, y + h) for x, y, w, h in boxes], np.float32).reshape(-1, 4)
    cls = np.zeros(len(xyxy), np.float32)
    img = np.full((100, 100, 3), 114, np.uint8)
    _, cls2, out = random_affine(img, cls, xyxy, (100, 100), np.random.default_rng(seed), degrees=10, translate=0.1,
                                 scale=0.3)
    assert len(cls2) == len(out) <= len(xyxy)
    assert ((out >= 0) & (out <= 100)).all()
    assert ((out[:, 2:] - out[:, :2]) >= MIN_BOX_PX).all()


def test_keep_boxes_rules():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 1.5, 10], [0, 0, 100, 100]], np.float32)
    after = np.array([[0, 0, 10, 10], [0, 0, 10, 0.5], [0, 0, 1.5, 10], [0, 0, 100, 5]], np.float32)
    assert keep_boxes(before, after).tolist() == [True, False, False, False]


def test_hsv_changes_colour_not_geometry():
    rng = np.random.default_rng(0)
    img, _, _ = solid_boxes_image(0, 64, 64, n=3)
    out = augment_hsv(img, rng, 0.5, 0.7, 0.4)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    grey = np.full((8, 8, 3), 114, np.uint8)
    assert np.array_equal(augment_hsv(grey, rng, 0.5, 0.7, 0.0), grey)  # no saturation to shift or scale
    assert augment_hsv(img, rng, 0, 0, 0) is img


def test_mixup_blends_and_keeps_both_box_sets():
    a = solid_boxes_image(1, 64, 64, n=2)
    b = solid_boxes_image(2, 64, 64, n=2, first_colour=2)
    img, cls, boxes = mixup(a, b, np.random.default_rng(0))
    assert len(cls) == len(boxes) == len(a[1]) + len(b[1])
    assert img.min() >= min(a[0].min(), b[0].min()) and img.max() <= max(a[0].max(), b[0].max())
    with pytest.raises(ValueError, match="equal image shapes"):
        mixup(a, solid_boxes_image(3, 32, 64, n=1), np.random.default_rng(0))
