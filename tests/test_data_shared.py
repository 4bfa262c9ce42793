"""Acceptance on the real datasets in ../shared (skipped when absent)."""

from __future__ import annotations

import numpy as np

from conftest import shared_dataset
from yololab.data import YoloDataset, check_data, load_data_config, load_image, read_coco


def test_bccd_counts():
    result = check_data(shared_dataset("bccd") / "data.yaml")
    assert (result["splits"]["train"]["images"], result["splits"]["train"]["boxes"]) == (292, 3941)
    assert (result["splits"]["val"]["images"], result["splits"]["val"]["boxes"]) == (72, 945)
    assert result["splits"]["train"]["per_class"]["Platelets"]["boxes"] == 292
    coco = read_coco(shared_dataset("bccd") / "annotations" / "instances_val.json")
    assert coco.summary() == {"val": {"images": 72, "boxes": 945}}


def test_raccoon_greyscale_images_load_as_rgb():
    cfg = load_data_config(shared_dataset("raccoon") / "data.yaml")
    result = check_data(cfg.yaml_file)
    converted = sorted(e["file"].split("/")[-1] for e in result["problems"]["train"]["entries"]
                       if e["kind"] == "converted_image")
    assert converted == ["raccoon-150.jpg", "raccoon-152.jpg", "raccoon-161.jpg"]
    img = load_image(cfg.root / "images" / "train" / "raccoon-150.jpg")
    assert img.ndim == 3 and img.shape[2] == 3 and np.array_equal(img[..., 0], img[..., 1])
    ds = YoloDataset([cfg.root / "images" / "train" / n for n in converted], imgsz=128, nc=cfg.nc)
    assert all(ds[i]["img"].shape == (3, 128, 128) for i in range(len(ds)))
