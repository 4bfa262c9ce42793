"""data.yaml resolution and YOLO <-> COCO <-> VOC conversion through the internal representation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from yololab import cli
from yololab.data import DataConfigError, convert, load_data_config, make_synthetic, read_coco, read_voc, read_yolo


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("fmt"), n_train=5, n_val=3, imgsz=64, seed=2)


def _write_yaml(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def test_data_yaml_forms(synth, tmp_path, monkeypatch):
    root = synth.parent
    cfg = load_data_config(synth)
    assert (len(cfg.train), len(cfg.val), cfg.test) == (5, 3, [])
    assert cfg.names == {0: "circle", 1: "square", 2: "triangle", 3: "cross"} and cfg.nc == 4
    assert cfg.coco_val_json == root / "annotations" / "instances_val.json"
    # train as a list of folders, val as a .txt list with relative paths, names as a list; relative `path`
    (root / "val.txt").write_text("".join(f"./images/val/{p.name}\n" for p in cfg.val))
    other = tmp_path / "cfg"
    other.mkdir()
    data = _write_yaml(other / "data.yaml", {"path": f"../{Path(*root.parts[-1:])}", "train": ["images/train",
                       "images/val"], "val": "val.txt", "names": ["a", "b", "c", "d"]})
    shutil.copytree(root, tmp_path / root.name, dirs_exist_ok=True)
    monkeypatch.chdir(Path("/"))  # resolution must not depend on the working directory
    cfg2 = load_data_config(data)
    assert cfg2.root == (tmp_path / root.name).resolve()
    assert len(cfg2.train) == 8 and len(cfg2.val) == 3 and all(p.is_file() for p in cfg2.val)
    assert cfg2.names == {0: "a", 1: "b", 2: "c", 3: "d"}


@pytest.mark.parametrize("content, message", [
    ({"train": "images/train", "val": "images/val"}, "missing 'names'"),
    ({"names": ["a"]}, "no split given"),
    ({"train": "images/train", "names": {0: "a", 2: "b"}}, "without gaps"),
    ({"train": "images/train", "names": ["a", "b"], "nc": 3}, "nc is 3 but 2 names"),
    ({"train": "nowhere", "names": ["a"]}, "not a folder, a .txt image list or an image"),
])
def test_data_yaml_errors(synth, content, message):
    bad = _write_yaml(synth.parent / "bad.yaml", content)
    with pytest.raises(DataConfigError, match=message):
        load_data_config(bad)


def _boxes_by_file(dset) -> dict[str, tuple]:
    return {r.file.name: (r.cls.tolist(), r.boxes) for records in dset.splits.values() for r in records}


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_round_trip_keeps_every_box(synth, tmp_path, fmt):
    original = read_yolo(synth)
    convert(synth, tmp_path / fmt, fmt)
    back = convert(tmp_path / fmt, tmp_path / "yolo", "yolo")
    assert back["splits"] == original.summary()
    restored = read_yolo(tmp_path / "yolo" / "data.yaml")
    assert restored.names == original.names
    a, b = _boxes_by_file(original), _boxes_by_file(restored)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0]
        assert np.allclose(a[name][1], b[name][1], atol=0.01), name


def test_coco_reader_reports_crowd_and_unknown_categories(synth, tmp_path):
    convert(synth, tmp_path / "coco", "coco")
    json_file = tmp_path / "coco" / "annotations" / "instances_val.json"
    coco = json.loads(json_file.read_text())
    coco["annotations"][0]["iscrowd"] = 1
    coco["annotations"][-1]["category_id"] = 42
    bad_image = coco["annotations"][-1]["image_id"]
    json_file.write_text(json.dumps(coco))
    dset = read_coco(json_file)
    assert dset.report.counts == {"crowd_box": 1, "class_out_of_range": 1}
    assert len(dset.splits["val"]) == 2
    assert "category_id 42" in dset.report.of_kind("class_out_of_range")[0][1]
    assert all(r.file.name != coco["images"][bad_image - 1]["file_name"] for r in dset.splits["val"])


def test_voc_reader_names_and_bad_xml(synth, tmp_path):
    convert(synth, tmp_path / "voc", "voc")
    ann = tmp_path / "voc" / "Annotations"
    sets = tmp_path / "voc" / "ImageSets" / "Main"
    assert [len((sets / f"{s}.txt").read_text().split()) for s in ("train", "val")] == [5, 3]
    assert (tmp_path / "voc" / "classes.txt").read_text().split() == ["circle", "square", "triangle", "cross"]
    broken = sorted(ann.glob("*.xml"))[0]
    broken.write_text("<annotation><object>")
    dset = read_voc(ann, names=["circle", "square", "triangle", "cross"])
    assert dset.report.counts == {"unreadable_label": 1}
    with pytest.raises(FileNotFoundError, match="no .xml"):
        read_voc(tmp_path)


def test_shipped_coco_json_matches_yolo_labels(synth):
    yolo = _boxes_by_file(read_yolo(synth))
    coco = _boxes_by_file(read_coco(synth.parent / "annotations" / "instances_val.json"))
    assert len(coco) == 3
    for name, (cls, boxes) in coco.items():
        assert cls == yolo[name][0] and np.allclose(boxes, yolo[name][1], atol=0.01)


def test_convert_cli(synth, tmp_path, capsys):
    assert cli.main(["convert", f"source={synth}", "to=voc", f"out={tmp_path / 'v'}", "json=true"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["splits"]["train"]["images"] == 5
    assert cli.main(["convert", f"source={synth}"]) == 2
    assert "needs to=..., out=..." in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        convert(synth, tmp_path / "x", "xml")
