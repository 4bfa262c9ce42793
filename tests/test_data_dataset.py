"""YoloDataset and build_dataloader: the sample contract, letterbox mapping, rect batches, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yololab.data import YoloDataset, build_dataloader, load_data_config, load_image, make_synthetic
from yololab.data.boxes import scale_boxes, xywh_to_xyxy

PLAIN = {"hsv_h": 0, "hsv_s": 0, "hsv_v": 0, "translate": 0, "scale": 0, "fliplr": 0, "mosaic": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 train / 6 val synthetic images at 96 px (every fourth one 72 px high)."""
    return load_data_config(make_synthetic(tmp_path_factory.mktemp("ds"), n_train=8, n_val=6, imgsz=96, seed=1))


def test_sample_contract(data):
    ds = YoloDataset(data.train, imgsz=64, augment=True, nc=data.nc)
    sample = ds[0]
    assert set(sample) == {"img", "cls", "bboxes", "im_file", "ori_shape", "ratio_pad"}
    assert sample["img"].dtype == torch.uint8 and sample["img"].shape == (3, 64, 64)
    assert sample["cls"].dtype == torch.float32 and sample["cls"].shape[1] == 1
    assert sample["bboxes"].shape == (len(sample["cls"]), 4)
    assert ((sample["bboxes"] >= 0) & (sample["bboxes"] <= 1)).all()
    assert sample["im_file"] == ds.labels[0]["im_file"]
    assert sample["ori_shape"] == (72, 96)  # every fourth synthetic image is 3/4 high
    label = ds.labels[0]
    assert label["cls"].dtype == np.float32 and label["cls"].shape == (len(label["bboxes"]), 1)


def test_letterbox_ratio_pad_maps_original_pixels(data):
    ds = YoloDataset(data.val, imgsz=64, nc=data.nc)
    for i in range(len(ds)):
        sample, label = ds[i], ds.labels[i]
        (gain_h, gain_w), (pad_w, pad_h) = sample["ratio_pad"]
        h0, w0 = sample["ori_shape"]
        original = scale_boxes(xywh_to_xyxy(label["bboxes"]), w0, h0)
        expected = original * np.float32([gain_w, gain_h] * 2) + np.float32([pad_w, pad_h] * 2)
        got = scale_boxes(xywh_to_xyxy(sample["bboxes"].numpy()), 64, 64)
        assert np.allclose(got, expected, atol=1e-3)
        # pixels agree too: the letterboxed image is the resized original placed at the pad offset
        img = sample["img"].permute(1, 2, 0).numpy()
        content_w, content_h = round(w0 * gain_w), round(h0 * gain_h)
        assert (img[:pad_h] == 114).all() and (img[pad_h + content_h:] == 114).all()
        assert content_w == 64 and (img[pad_h:pad_h + content_h, pad_w:pad_w + content_w] != 114).any()


def test_rect_batches_share_a_stride_multiple_shape(data):
    ds = YoloDataset(data.val, imgsz=64, rect=True, batch_size=2, stride=32, nc=data.nc)
    loader = build_dataloader(ds, 2, workers=0)
    shapes = []
    for batch in loader:
        h, w = batch["img"].shape[2:]
        assert h % 32 == 0 and w % 32 == 0
        assert batch["batch_idx"].tolist() == sorted(batch["batch_idx"].tolist())
        shapes.append((h, w))
    aspect = [h / w for h, w in (lb["shape"] for lb in ds.labels)]
    assert aspect == sorted(aspect)
    assert (64, 96) in shapes and (96, 96) in shapes  # 72x96 images get a flatter batch (pad 0.5 adds half a stride)
    with pytest.raises(ValueError, match="shuffle=False"):
        build_dataloader(ds, 2, shuffle=True)


def test_collate_gives_batch_indices(data):
    ds = YoloDataset(data.train, imgsz=64, nc=data.nc)
    batch = YoloDataset.collate_fn([ds[0], ds[1], ds[2]])
    counts = [len(ds.labels[i]["cls"]) for i in range(3)]
    assert batch["img"].shape == (3, 3, 64, 64)
    assert batch["batch_idx"].tolist() == [i for i, n in enumerate(counts) for _ in range(n)]
    assert batch["cls"].shape == (sum(counts), 1) and batch["bboxes"].shape == (sum(counts), 4)
    assert len(batch["im_file"]) == len(batch["ori_shape"]) == len(batch["ratio_pad"]) == 3


def _epoch(loader) -> list[tuple]:
    return [(b["im_file"], b["img"].clone(), b["bboxes"].clone()) for b in loader]


def _same(a: list[tuple], b: list[tuple]) -> bool:
    return all(x[0] == y[0] and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2]) for x, y in zip(a, b))


def test_loader_is_deterministic_per_seed(data):
    def run(seed: int, workers: int) -> list[tuple]:
        ds = YoloDataset(data.train, imgsz=64, augment=True, hyp={"mixup": 0.3}, nc=data.nc)
        loader = build_dataloader(ds, 4, workers=workers, shuffle=True, seed=seed)
        return _epoch(loader) + _epoch(loader)

    assert _same(run(1, 2), run(1, 2))  # two workers, two epochs
    in_process = run(1, 0)
    assert _same(in_process, run(1, 0))
    assert not _same(in_process, run(2, 0))


def test_close_mosaic_reaches_persistent_workers(data):
    # imgsz = image size: no resizing, so a non-mosaic sample with all other augmentations off is the plain image
    ds = YoloDataset(data.train, imgsz=96, augment=True, hyp={**PLAIN, "mosaic": 1.0}, nc=data.nc)
    plain = YoloDataset(data.train, imgsz=96, augment=False, nc=data.nc)
    expected = {plain[i]["im_file"]: plain[i]["img"] for i in range(len(plain))}
    loader = build_dataloader(ds, 4, workers=1, shuffle=True)

    def matches_plain(batch) -> list[bool]:
        return [torch.equal(img, expected[f]) for img, f in zip(batch["img"], batch["im_file"])]

    assert not any(m for b in loader for m in matches_plain(b))  # mosaic on: never the plain image
    ds.close_mosaic()
    assert all(m for b in loader for m in matches_plain(b))


def test_ram_cache_gives_identical_samples(data):
    plain = YoloDataset(data.val, imgsz=64, nc=data.nc)
    cached = YoloDataset(data.val, imgsz=64, cache="ram", nc=data.nc)
    for i in range(len(plain)):
        assert torch.equal(plain[i]["img"], cached[i]["img"])


def test_mosaic_keeps_objects_of_four_images(data):
    ds = YoloDataset(data.train, imgsz=64, augment=True, hyp={**PLAIN, "mosaic": 1.0}, nc=data.nc)
    ds.rng = np.random.default_rng(0)
    n_boxes = [len(ds[0]["cls"]) for _ in range(20)]
    assert max(n_boxes) > len(ds.labels[0]["cls"])


def test_invalid_arguments(data):
    with pytest.raises(ValueError, match="rect=True is for validation"):
        YoloDataset(data.val, rect=True, augment=True)
    with pytest.raises(ValueError, match="cache must be 'ram'"):
        YoloDataset(data.val, cache="disk")


def test_load_image_is_rgb(tmp_path):
    import cv2

    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    img = load_image(tmp_path / "red.png")
    assert img.shape == (4, 6, 3) and (img[..., 0] == 255).all() and (img[..., 1:] == 0).all()
