"""Validator end to end: an oracle model that reads the boxes off the images must score ~1 after letterbox and back."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from yololab import YOLO
from yololab.cli import main
from yololab.engine.validator import dataset_ground_truth, validate
from yololab.nn import DetectionModel

NAMES = {0: "red", 1: "blue"}
COLOURS = {0: (255, 0, 0), 1: (0, 0, 255)}
# (height, width, [(class, x1, y1, x2, y2)]): mixed aspect ratios and small / medium / large objects
SCENES = [
    (120, 160, [(0, 10, 12, 40, 50), (1, 90, 30, 150, 100)]),
    (160, 120, [(1, 20, 20, 32, 34), (0, 50, 80, 110, 150)]),
    (100, 100, [(0, 30, 30, 70, 60)]),
    (300, 400, [(1, 40, 40, 160, 170), (0, 250, 100, 300, 150), (1, 330, 250, 350, 270)]),
    (90, 200, []),
]


class ColourOracle(nn.Module):
    """Finds the solid red and blue rectangles in its input and returns them as decoded head output."""

    def __init__(self, slots: int = 8):
        super().__init__()
        self.nc, self.slots = len(NAMES), slots
        self.stride = torch.tensor([8.0, 16.0, 32.0])
        self.scale = nn.Parameter(torch.ones(()))  # gives the model a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 4 + self.nc, self.slots)
        for b, image in enumerate(x.cpu()):
            k = 0
            for c, colour in COLOURS.items():
                target = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1) / 255
                mask = ((image - target).abs().amax(0) < 0.3).numpy().astype(np.uint8)
                _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
                for left, top, w, h, _ in stats[1:]:
                    out[b, :4, k] = torch.tensor([left + w / 2, top + h / 2, w, h], dtype=torch.float32)
                    out[b, 4 + c, k] = 0.9
                    k += 1
        return out * self.scale


def write_dataset(root: Path, coco_json: dict | None = None) -> Path:
    """Images with solid rectangles on grey, YOLO labels and data.yaml; returns the yaml path."""
    for sub in ("images/val", "labels/val"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (h, w, boxes) in enumerate(SCENES):
        image = np.full((h, w, 3), 160, np.uint8)
        lines = []
        for c, x1, y1, x2, y2 in boxes:
            image[y1:y2, x1:x2] = COLOURS[c]
            lines.append(f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
        cv2.imwrite(str(root / f"images/val/im{i}.png"), image[..., ::-1])
        (root / f"labels/val/im{i}.txt").write_text("\n".join(lines))
    if coco_json is not None:
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations/instances_val.json").write_text(json.dumps(coco_json))
    data_file = root / "data.yaml"
    data_file.write_text(yaml.safe_dump({"path": ".", "train": "images/val", "val": "images/val", "names": NAMES}))
    return data_file


def scene_coco_json(image_id_offset: int = 100, category_ids: dict[int, int] | None = None) -> dict:
    """The dataset's own COCO ground truth with ids unlike the YOLO indices (matched by file and class name)."""
    category_ids = category_ids or {0: 5, 1: 9}
    images, annotations = [], []
    for i, (h, w, boxes) in enumerate(SCENES):
        images.append({"id": image_id_offset + i, "file_name": f"im{i}.png", "height": h, "width": w})
        for c, x1, y1, x2, y2 in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id_offset + i,
                                "category_id": category_ids[c], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    categories = [{"id": category_ids[c], "name": n} for c, n in NAMES.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.fixture
def data_yaml(tmp_path):
    return write_dataset(tmp_path / "shapes")


def test_oracle_scores_one_and_boxes_map_back_to_original_pixels(data_yaml, tmp_path):
    model = ColourOracle().train()
    r = validate(model, data_yaml, imgsz=128, batch=2, workers=0, save_dir=tmp_path / "run", save_json=True,
                 plots=True, verbose=False)
    assert model.training  # mode restored
    assert r["map50"] == pytest.approx(1.0) and r["map"] > 0.8
    assert r["precision"] == pytest.approx(1.0) and r["recall"] == pytest.approx(1.0)
    assert r["images"] == 5 and r["instances"] == 8
    assert r["per_class"]["blue"]["instances"] == 4 and r["per_class"]["blue"]["images"] == 3
    assert None not in (r["aps"], r["apm"], r["apl"])
    assert set(r["speed_ms"]) == {"preprocess", "inference", "postprocess"}
    predictions = json.loads((tmp_path / "run/predictions.json").read_text())
    assert len(predictions) == 8
    largest = max(predictions, key=lambda p: p["bbox"][2] * p["bbox"][3])  # blue 40,40 -> 160,170 in 400 x 300
    assert largest["category_id"] == 1 and np.allclose(largest["bbox"], [40, 40, 120, 130], atol=3)
    for name in ("pr_curve.png", "f1_curve.png", "confusion_matrix.png", "val_images.jpg"):
        assert (tmp_path / "run" / name).stat().st_size > 5_000, name


def test_dataset_coco_json_is_used_when_it_matches(tmp_path, capsys):
    data_file = write_dataset(tmp_path / "shapes", scene_coco_json())
    r = validate(ColourOracle(), data_file, imgsz=128, batch=2, workers=0, save_dir=tmp_path / "run", save_json=True,
                 verbose=False)
    predictions = json.loads((tmp_path / "run/predictions.json").read_text())
    assert {p["category_id"] for p in predictions} == {5, 9}
    assert {p["image_id"] for p in predictions} <= set(range(100, 105))
    assert r["map50"] == pytest.approx(1.0) and "note:" not in capsys.readouterr().out


def test_dataset_coco_json_that_does_not_match_falls_back_to_labels(tmp_path, caplog):
    gt = scene_coco_json()
    gt["images"] = gt["images"][:3]
    data_file = write_dataset(tmp_path / "shapes", gt)
    r = validate(ColourOracle(), data_file, imgsz=128, batch=2, workers=0, verbose=False)
    assert "does not list exactly" in caplog.text and r["instances"] == 8 and r["map50"] == pytest.approx(1.0)


def test_sliced_validation_with_one_tile_equals_whole_image(data_yaml):
    r = validate(ColourOracle(), data_yaml, imgsz=128, batch=2, workers=0, slice=512, slice_full=False, verbose=False)
    assert r["map50"] == pytest.approx(1.0) and r["images"] == 5


def test_real_model_returns_the_contract_and_rejects_wrong_class_count(data_yaml):
    torch.manual_seed(0)
    model = DetectionModel({**_tiny_yaml(), "nc": 2})
    r = validate(model, data_yaml, imgsz=64, batch=4, workers=0, verbose=False)
    for key in ("map", "map50", "map75", "aps", "apm", "apl", "ars", "arm", "arl", "precision", "recall",
                "images", "instances"):
        assert key in r, key
    assert set(r["per_class"]) == {"red", "blue"}
    assert set(r["per_class"]["red"]) >= {"ap", "ap50", "images", "instances"}
    assert 0.0 <= r["map"] <= 1.0 and model.training  # a new module trains by default: mode restored
    json.dumps(r)  # JSON-able
    with pytest.raises(ValueError, match="predicts 3 classes but the dataset has 2"):
        validate(DetectionModel({**_tiny_yaml(), "nc": 3}), data_yaml, imgsz=64, workers=0, verbose=False)


def _tiny_yaml() -> dict:
    """A very small anchor-free detector (widths 8-32) so the real-model path stays fast."""
    return {
        "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]],
                     [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]]],
        "head": [[[2, 3, 4], 1, "Detect", ["nc"]]],
    }


def test_cli_val_scores_external_json_files(tmp_path, capsys):
    gt = scene_coco_json()
    pred = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.8}
            for a in gt["annotations"][:-1]]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    code = main(["val", f"gt={tmp_path / 'gt.json'}", f"pred={tmp_path / 'pred.json'}", f"project={tmp_path}",
                 "name=ext", "json=true"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # red all found (AP50 1); blue 3 of 4 at one score: precision 1 at recall points 0..0.75 (76 of 101)
    assert out["map50"] == pytest.approx((1 + 76 / 101) / 2, abs=1e-6)
    assert out["per_class"]["red"]["ap"] == pytest.approx(1.0) and out["speed_ms"] is None
    assert (tmp_path / "ext/pr_curve.png").is_file()
    (tmp_path / "bad.json").write_text(json.dumps(pred + [{**pred[0], "image_id": 7}]))
    assert main(["val", f"gt={tmp_path / 'gt.json'}", f"pred={tmp_path / 'bad.json'}", "plots=false"]) == 2
    assert "image_id" in capsys.readouterr().err


def test_cli_and_api_validate_a_model_yaml(data_yaml, tmp_path, capsys):
    model_yaml = tmp_path / "tiny.yaml"
    model_yaml.write_text(yaml.safe_dump(_tiny_yaml()))
    code = main(["val", f"model={model_yaml}", f"data={data_yaml}", "imgsz=64", "batch=4", "workers=0",
                 f"project={tmp_path}", "name=v", "plots=false", "save_json=true", "json=true"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"map", "map50", "map75", "aps", "apm", "apl", "precision", "recall", "per_class", "speed_ms"} <= set(out)
    assert (tmp_path / "v/predictions.json").is_file()
    r = YOLO(ColourOracle()).val(data=str(data_yaml), imgsz=128, batch=2, workers=0, plots=False, verbose=False)
    assert r["map50"] == pytest.approx(1.0) and r["save_dir"] is None


def test_multi_label_nms_keeps_a_runner_up_class_for_evaluation():
    from yololab.ops import non_max_suppression

    # anchor 0: one box, class scores 0.6 / 0.5; anchor 1: a distant box of class 1
    pred = torch.tensor([[[50.0, 150.0], [50.0, 150.0], [20.0, 20.0], [20.0, 20.0], [0.6, 0.1], [0.5, 0.9]]])
    single = non_max_suppression(pred, conf=0.3)[0]
    multi = non_max_suppression(pred, conf=0.3, multi_label=True)[0]
    assert sorted(single[:, 5].tolist()) == [0.0, 1.0]
    scores_classes = sorted(map(tuple, multi[:, 4:].tolist()))
    assert [c for _, c in scores_classes] == [1.0, 0.0, 1.0]
    assert [s for s, _ in scores_classes] == pytest.approx([0.5, 0.6, 0.9])
    assert torch.equal(multi[multi[:, 4] == 0.5, :4], single[single[:, 5] == 0, :4])  # the same box, second class
    assert len(non_max_suppression(pred, conf=0.55, multi_label=True)[0]) == 2  # only scores above conf count
    assert non_max_suppression(pred, conf=0.3, multi_label=True, classes=[0])[0][:, 5].tolist() == [0.0]


def test_a_mismatching_coco_json_falls_back_with_one_warning(tmp_path, caplog):
    from types import SimpleNamespace

    gt_file = tmp_path / "instances_val.json"
    gt_file.write_text(json.dumps({"images": [{"id": 5, "file_name": "other.jpg", "width": 8, "height": 8}],
                                   "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    data = SimpleNamespace(coco_val_json=gt_file, names={0: "a"})
    labels = [{"im_file": str(tmp_path / "x.jpg"), "shape": (8, 8), "cls": np.zeros((0, 1)), "bboxes": np.zeros((0, 4))}]
    for _ in range(3):  # validation runs every epoch
        gt, image_ids, _ = dataset_ground_truth(labels, data)
    assert [im["file_name"] for im in gt["images"]] == ["x.jpg"] and image_ids == {str(tmp_path / "x.jpg"): 1}
    assert sum("does not list exactly" in r.getMessage() for r in caplog.records) == 1
