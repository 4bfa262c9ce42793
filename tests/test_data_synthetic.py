"""The built-in synthetic dataset: deterministic, small-object heavy, written atomically; large scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yololab.data import check_data, load_data_config, make_large_scene, make_synthetic, synthetic_dataset
from yololab.data.synthetic import SYNTHETIC_VERSION


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(tmp_path):
    make_synthetic(tmp_path / "a", n_train=4, n_val=2, imgsz=96, seed=5)
    make_synthetic(tmp_path / "b", n_train=4, n_val=2, imgsz=96, seed=5)
    make_synthetic(tmp_path / "c", n_train=4, n_val=2, imgsz=96, seed=6)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_many_small_objects_and_clean_labels(tmp_path):
    data_yaml = make_synthetic(tmp_path, n_train=20, n_val=4, imgsz=320)
    result = check_data(data_yaml, imgsz=320)
    train = result["splits"]["train"]
    assert result["problems"]["train"]["counts"] == {}
    assert train["sizes"]["small"] > 0.35 * train["boxes"] and train["sizes"]["large"] > 0
    assert all(c["boxes"] > 0 for c in train["per_class"].values())


def test_synthetic_dataset_generated_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr("yololab.data.synthetic.make_synthetic",
                        lambda root: make_synthetic(root, n_train=2, n_val=1, imgsz=64))
    path = synthetic_dataset(tmp_path / "set")
    assert path == tmp_path / "set" / "data.yaml"
    stamp = path.stat().st_mtime_ns
    assert synthetic_dataset(tmp_path / "set") == path and path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temporary folder left behind


def test_default_synthetic_config():
    cfg = load_data_config("synthetic")
    assert cfg.root.name == f"synthetic-v{SYNTHETIC_VERSION}"
    assert (len(cfg.train), len(cfg.val), cfg.nc) == (200, 50, 4)
    assert cfg.coco_val_json is not None and cfg.coco_val_json.is_file()


def test_large_scene_has_tiny_objects_inside():
    img, cls, boxes = make_large_scene(720, 1280, n_objects=30, object_px=(8, 20), seed=1)
    assert img.shape == (720, 1280, 3) and img.dtype == np.uint8
    assert len(cls) == len(boxes) >= 25
    side = (boxes[:, 2:] - boxes[:, :2]).max(1)
    assert (side <= 20 * 1.25 + 1).all() and (side >= 8 * 0.8 - 1).all()
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 1280).all() and (boxes[:, [1, 3]] <= 720).all()
    assert np.array_equal(img, make_large_scene(720, 1280, n_objects=30, object_px=(8, 20), seed=1)[0])


def test_label_distribution_plot(tmp_path):
    from yololab.data import YoloDataset, load_image, plot_label_distribution

    cfg = load_data_config(make_synthetic(tmp_path / "d", n_train=6, n_val=1, imgsz=160))
    labels = YoloDataset(cfg.train, imgsz=160).labels
    png = plot_label_distribution(labels, cfg.names, tmp_path / "run" / "labels.png", imgsz=160)
    assert png.is_file() and load_image(png).shape == (400, 1000, 3)
