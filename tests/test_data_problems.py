"""Bad input: each kind of broken file is counted, reported with its file name, and skipped in training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from yololab import cli
from yololab.data import (
    YoloDataset,
    build_dataloader,
    check_data,
    format_check_report,
    load_data_config,
    load_image,
    load_labels,
    make_synthetic,
)
from yololab.data import labels as labels_module

CLEAN_IMAGES = 6


def _copy_sample(root: Path, name: str, label: str | None) -> Path:
    """A copy of a clean image under a new name with the given label text (None: no label file)."""
    src = sorted((root / "images" / "train").glob("train_*.jpg"))[0]
    dst = root / "images" / "train" / name
    shutil.copy(src, dst)
    if label is not None:
        (root / "labels" / "train" / f"{Path(name).stem}.txt").write_text(label)
    return dst


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """Synthetic set (6 clean train images) plus one file per problem kind; returns data.yaml."""
    root = tmp_path_factory.mktemp("broken")
    data_yaml = make_synthetic(root, n_train=CLEAN_IMAGES, n_val=2, imgsz=64, seed=3)
    box = "0 0.5 0.5 0.25 0.25\n"
    truncated = _copy_sample(root, "bad_truncated.jpg", box)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size * 6 // 10])
    (root / "images" / "train" / "bad_text.jpg").write_text("this is not an image\n")
    (root / "labels" / "train" / "bad_text.txt").write_text(box)
    _copy_sample(root, "bad_fields.jpg", box + "0 0.5 0.5 0.2\n")
    _copy_sample(root, "bad_number.jpg", "0 0.5 abc 0.2 0.2\n")
    _copy_sample(root, "bad_class.jpg", "99 0.5 0.5 0.2 0.2\n")
    _copy_sample(root, "bad_wide.jpg", "0 0.5 0.5 1.7 0.2\n")
    _copy_sample(root, "bg_empty.jpg", "")
    _copy_sample(root, "bg_missing.jpg", None)
    _copy_sample(root, "fix_duplicate.jpg", box + box)
    _copy_sample(root, "fix_clip.jpg", "1 0.9 0.5 0.24 0.2\n")  # right edge at 1.02
    _copy_sample(root, "fix_degenerate.jpg", box + "2 0.3 0.3 0.001 0.2\n")
    grey = np.tile(np.linspace(0, 255, 64), (48, 1)).round().astype(np.uint8)  # dark left, white right
    Image.fromarray(grey, "L").save(root / "images" / "train" / "conv_grey.jpg")
    Image.fromarray(np.dstack([grey] * 4), "RGBA").save(root / "images" / "train" / "conv_rgba.png")
    cv2.imwrite(str(root / "images" / "train" / "conv_grey16.png"), grey.astype(np.uint16) * 257)
    cv2.imwrite(str(root / "images" / "train" / "conv_rgb16.png"), np.dstack([grey] * 3).astype(np.uint16) * 257)
    for name in ("conv_grey", "conv_rgba", "conv_grey16", "conv_rgb16"):
        (root / "labels" / "train" / f"{name}.txt").write_text(box)
    return data_yaml


SKIPPED = {"bad_truncated.jpg": "truncated_image", "bad_text.jpg": "unreadable_image",
           "bad_fields.txt": "bad_label_row", "bad_number.txt": "bad_label_row",
           "bad_class.txt": "class_out_of_range", "bad_wide.txt": "box_outside_image"}
KEPT = {"bg_empty.txt": "empty_label", "bg_missing.jpg": "missing_label", "fix_duplicate.txt": "duplicate_box",
        "fix_clip.txt": "box_clipped", "fix_degenerate.txt": "degenerate_box", "conv_grey.jpg": "converted_image",
        "conv_rgba.png": "converted_image", "conv_grey16.png": "converted_image", "conv_rgb16.png": "converted_image"}


def test_every_problem_is_counted_and_named(broken):
    result = check_data(broken, imgsz=64)
    train = result["problems"]["train"]
    found = {Path(e["file"]).name: e["kind"] for e in train["entries"]}
    assert found == {**SKIPPED, **KEPT}
    expected_counts: dict[str, int] = {}
    for kind in [*SKIPPED.values(), *KEPT.values()]:
        expected_counts[kind] = expected_counts.get(kind, 0) + 1
    assert train["counts"] == expected_counts
    assert result["splits"]["train"]["files"] == CLEAN_IMAGES + len(SKIPPED) + len(KEPT)
    assert result["splits"]["train"]["images"] == CLEAN_IMAGES + len(KEPT)
    assert result["splits"]["train"]["background_images"] == 2
    messages = {Path(e["file"]).name: e["message"] for e in train["entries"]}
    assert "row 2: 4 fields" in messages["bad_fields.txt"]
    assert "class 99" in messages["bad_class.txt"]
    assert "16-bit RGB" in messages["conv_rgb16.png"]
    text = format_check_report(result)
    assert "bad_wide.txt" in text and "box_outside_image" in text


def test_fixed_labels_keep_the_good_boxes(broken):
    cfg = load_data_config(broken)
    labels, _ = load_labels(cfg.train, cfg.nc)
    by_name = {Path(lb["im_file"]).name: lb for lb in labels}
    assert set(SKIPPED).isdisjoint(by_name)
    assert len(by_name["fix_duplicate.jpg"]["cls"]) == 1
    assert len(by_name["fix_degenerate.jpg"]["cls"]) == 1
    x1 = by_name["fix_clip.jpg"]["bboxes"][0, 0] - by_name["fix_clip.jpg"]["bboxes"][0, 2] / 2
    x2 = by_name["fix_clip.jpg"]["bboxes"][0, 0] + by_name["fix_clip.jpg"]["bboxes"][0, 2] / 2
    assert x2 == pytest.approx(1.0) and x1 == pytest.approx(0.78)
    assert len(by_name["bg_empty.jpg"]["cls"]) == 0 and len(by_name["bg_missing.jpg"]["cls"]) == 0


def test_training_loader_skips_bad_files(broken):
    cfg = load_data_config(broken)
    dataset = YoloDataset(cfg.train, imgsz=64, augment=True, hyp={"mixup": 0.5}, nc=cfg.nc)
    assert len(dataset) == CLEAN_IMAGES + len(KEPT)
    batches = list(build_dataloader(dataset, 4, workers=0, shuffle=True))
    assert sum(len(b["im_file"]) for b in batches) == len(dataset)
    for b in batches:
        assert b["img"].shape[1:] == (3, 64, 64)
        assert ((b["bboxes"] >= 0) & (b["bboxes"] <= 1)).all()


def test_converted_images_load_as_rgb(broken):
    folder = Path(broken).parent / "images" / "train"
    for name in ("conv_grey.jpg", "conv_rgba.png", "conv_grey16.png", "conv_rgb16.png"):
        img = load_image(folder / name)
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert img[:, -1].min() >= 245 and img[:, 0].max() <= 10  # 16-bit values scaled, not clipped
        assert (img[..., 0] == img[..., 2]).all()


def test_no_usable_image_fails_fast(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="no usable image among 1 files"):
        YoloDataset([tmp_path / "images" / "a.jpg"])


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "x.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="not a decodable image"):
        load_image(tmp_path / "x.png")


def test_label_cache_reused_and_invalidated(tmp_path, monkeypatch):
    data_yaml = make_synthetic(tmp_path, n_train=3, n_val=1, imgsz=64)
    files = load_data_config(data_yaml).train
    first, _ = load_labels(files, 4)
    assert (tmp_path / "labels" / "train.yololab.cache").is_file()
    assert not list((tmp_path / "labels").glob(".*tmp"))

    def no_scan(*args, **kwargs):
        raise AssertionError("labels re-parsed although nothing changed")

    monkeypatch.setattr(labels_module, "verify_sample", no_scan)
    cached, _ = load_labels(files, 4)
    assert [lb["im_file"] for lb in cached] == [lb["im_file"] for lb in first]
    assert all(np.array_equal(a["bboxes"], b["bboxes"]) for a, b in zip(cached, first))
    monkeypatch.undo()
    label = tmp_path / "labels" / "train" / "train_0000.txt"
    label.write_text("3 0.5 0.5 0.5 0.5\n")
    changed, _ = load_labels(files, 4)
    assert changed[0]["cls"].tolist() == [[3.0]]


def test_label_cache_never_written_into_read_only_dataset(tmp_path, monkeypatch):
    data_yaml = make_synthetic(tmp_path / "ro", n_train=2, n_val=1, imgsz=64)
    monkeypatch.setenv("YOLOLAB_CACHE", str(tmp_path / "cache"))
    labels_dir = tmp_path / "ro" / "labels"
    labels_dir.chmod(0o555)
    try:
        load_labels(load_data_config(data_yaml).train, 4)
        assert not list(labels_dir.glob("*.cache"))
        assert len(list((tmp_path / "cache" / "labels").glob("*.cache"))) == 1
    finally:
        labels_dir.chmod(0o755)


def test_check_data_cli_json_last_line(broken, capsys):
    assert cli.main(["check-data", f"data={broken}", "imgsz=64", "json=true"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["problems"]["train"]["counts"]["bad_label_row"] == 2
    assert cli.main(["check-data", f"data={broken}", "imgsz=64"]) == 0
    assert "truncated_image" in capsys.readouterr().out
