"""The anchor-based YOLOv5 downstream: its recipe as data, training with AutoAnchor, checkpoint, predict, fuse, ONNX."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import yaml

from model_checks import assert_fuses_and_exports
from tiny_training import tiny_dataset, tiny_settings
from yololab import YOLO
from yololab.cfg import command_keys, settings
from yololab.cfg.recipe import load_recipe, recipe_name
from yololab.checkpoint import load_checkpoint, model_from_checkpoint
from yololab.engine.exporter import OnnxModel, export
from yololab.engine.predictor import sliced_predict
from yololab.engine.trainer import Trainer
from yololab.nn import DetectionModel, load_model_yaml

# YOLOv5 v7.0 data/hyps/hyp.scratch-low.yaml (the keys with an effect) and its train.py choices outside the file.
HYP_SCRATCH_LOW = {"lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
                   "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "cls": 0.5, "obj": 1.0, "anchor_t": 4.0,
                   "fl_gamma": 0.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1,
                   "scale": 0.5, "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0,
                   "mixup": 0.0}
OUTSIDE_THE_FILE = {"optimizer": "SGD", "close_mosaic": 0, "warmup_min_iters": 100, "cos_lr": False, "nbs": 64,
                    "label_smoothing": 0.0, "autoanchor": True,
                    "iou": 0.6}  # val.py's NMS IoU, which its train.py validates with


def test_recipe_is_yolov5_scratch_low():
    assert load_recipe("yolov5-anchor") == {**HYP_SCRATCH_LOW, **OUTSIDE_THE_FILE}
    assert set(load_recipe("yolov5-anchor")) <= set(command_keys("train"))  # a recipe only sets train keys


def test_family_recipe_applies_to_the_keys_the_user_did_not_set(tmp_path):
    data = tiny_dataset(tmp_path / "data", n_train=4, n_val=2)
    trainer = Trainer(settings("train", {"model": "yolov5n-anchor.yaml", "data": str(data), "project": str(tmp_path),
                                         "box": 0.1, "verbose": False}))
    assert trainer.args.box == 0.1  # the user's key wins
    assert (trainer.args.cls, trainer.args.optimizer, trainer.args.close_mosaic) == (0.5, "SGD", 0)  # the family's
    plain = Trainer(settings("train", {"model": "yolov5n.yaml", "data": str(data), "project": str(tmp_path),
                                       "verbose": False}))
    assert (plain.args.box, plain.args.optimizer) == (7.5, "auto")  # anchor-free: default.yaml
    assert (trainer.args.iou, plain.args.iou) == (0.6, 0.7)  # validation's NMS IoU: YOLOv5's val.py, default.yaml


def test_training_and_val_score_at_the_family_nms_iou(tmp_path, monkeypatch):
    """The in-training validation, best.pt's final one and `yololab val` all use the recipe's IoU 0.6 for an
    anchor-based model (what YOLOv5 reports), a given iou= wins, and anchor-free models keep 0.7."""
    import yololab.api as api
    import yololab.engine.trainer as trainer_module

    seen = []

    def spy(real):
        def validate(*args, **kwargs):
            seen.append(kwargs["iou"])
            return real(*args, **kwargs)
        return validate

    monkeypatch.setattr(trainer_module, "validate", spy(trainer_module.validate))
    monkeypatch.setattr(api, "validate", spy(api.validate))
    data = tiny_dataset(tmp_path / "data", n_train=4, n_val=2)
    result = Trainer(tiny_settings(data, tmp_path / "runs", model="yolov5n-anchor.yaml", epochs=1,
                                   autoanchor=False)).train()
    assert seen == [0.6, 0.6]  # epoch 1, then best.pt
    best = result["best"]
    for model, given, expected in [(best, {}, 0.6), (best, {"iou": 0.5}, 0.5), ("yolov5n.yaml", {}, 0.7)]:
        api.val(settings("val", {"model": model, "data": str(data), "imgsz": 64, "plots": False, "verbose": False,
                                 **given}))
        assert seen[-1] == expected


def test_compare_gives_each_model_its_family_recipe(tmp_path):
    from yololab.ablation.command import family_recipe
    from yololab.ablation.runner import run_all

    assert family_recipe("yolov5n.yaml", frozenset()) == {}
    overlay = family_recipe("yolov5n-anchor.yaml", frozenset({"box"}))
    assert "box" not in overlay and overlay["obj"] == 1.0 and overlay["optimizer"] == "SGD"
    seen = {}

    def run_fn(model, seed, run_dir, recipe, device):
        seen[model] = recipe
        return {"map": 0.1}

    run_all(["yolov5n.yaml", "yolov5n-anchor.yaml"], [0], tmp_path, {"box": 7.5, "epochs": 3}, run_fn=run_fn,
            log=lambda m: None, family_recipes={"yolov5n-anchor.yaml": {"box": 0.05}})
    assert seen == {"yolov5n.yaml": {"box": 7.5, "epochs": 3}, "yolov5n-anchor.yaml": {"box": 0.05, "epochs": 3}}


def test_recipe_name_follows_the_head():
    assert recipe_name(load_model_yaml("yolov5n-anchor.yaml")) == "yolov5-anchor"
    assert recipe_name(load_model_yaml("yolov5n.yaml")) is None
    with pytest.raises(FileNotFoundError, match="known: yolov5-anchor"):
        load_recipe("yolov9")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """yolov5n with ``anchors: 3`` (computed by AutoAnchor in the trainer) trained for 5 short epochs."""
    root = tmp_path_factory.mktemp("anchor_train")
    data = tiny_dataset(root / "data", n_train=8, n_val=4, overfit=True)
    model_file = root / "anchor-count.yaml"
    model_file.write_text(yaml.safe_dump({**load_model_yaml("yolov5n-anchor.yaml"), "anchors": 3}))
    settings = dict(tiny_settings(data, root / "runs", model=str(model_file), epochs=5, imgsz=128, optimizer="AdamW",
                                  lr0=0.002, box=0.05, cls=0.5, warmup_epochs=0, nbs=4))
    settings.update(obj=1.0, anchor_t=4.0, autoanchor=True)
    trainer = Trainer(settings)
    return trainer, trainer.train()


def test_training_lowers_the_loss_and_validates(trained):
    trainer, result = trained
    with open(trainer.save_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    box = [float(r["train/box_loss"]) for r in rows]
    total = [sum(float(r[k]) for k in ("train/box_loss", "train/cls_loss", "train/obj_loss")) for r in rows]
    assert box[-1] < box[0] and total[-1] < total[0]
    assert 0 <= result["map"] <= 1 and "aps" in result


def test_checkpoint_carries_the_autoanchor_anchors(trained):
    _, result = trained
    ckpt = load_checkpoint(result["best"])
    anchors_px = ckpt["model"]["model.24.anchors"] * torch.tensor([8.0, 16.0, 32.0]).view(3, 1, 1)
    computed = ckpt["meta"]["model_yaml"]["anchors"]
    assert isinstance(computed, list) and np.allclose(np.array(computed), anchors_px.view(3, 6).numpy(), atol=0.01)
    model = model_from_checkpoint(result["best"])
    assert model.head.anchors_given and torch.equal(model.head.anchors, ckpt["model"]["model.24.anchors"])


def test_trained_model_predicts_whole_and_sliced(trained):
    _, result = trained
    image = (np.random.default_rng(0).random((128, 160, 3)) * 255).astype(np.uint8)
    results = YOLO(result["best"]).predict(image, imgsz=128, conf=0.0)
    assert results[0].boxes.xyxy.shape[1] == 4
    model = model_from_checkpoint(result["best"]).eval()
    merged = sliced_predict(model, image, imgsz=64, slice=64, overlap=0.2, conf=0.0)
    assert merged.shape[1] == 6


def test_fuse_and_onnx_equivalence(tmp_path):
    assert_fuses_and_exports(DetectionModel("yolov5n-anchor.yaml", nc=3), tmp_path, imgsz=96)


def test_dynamic_onnx_export_takes_any_batch_and_size(tmp_path):
    model = DetectionModel("yolov5n-anchor.yaml", nc=2).eval()
    onnx_model = OnnxModel(export(model, tmp_path / "d.onnx", imgsz=64, dynamic=True, simplify=False,
                                  verbose=False)["file"])
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        ref = model(x)
    out = onnx_model(x)
    assert out.shape == ref.shape and (out - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_interrupted_anchor_run_resumes_to_the_same_weights(tmp_path):
    data = tiny_dataset(tmp_path / "data", n_train=8, n_val=4)
    model_file = tmp_path / "anchor-count.yaml"
    model_file.write_text(yaml.safe_dump({**load_model_yaml("yolov5n-anchor.yaml"), "anchors": 3}))

    def settings(name: str) -> dict:
        s = dict(tiny_settings(data, tmp_path, model=str(model_file), name=name, epochs=2, box=0.05, cls=0.5))
        return {**s, "obj": 1.0, "anchor_t": 4.0, "autoanchor": True}

    def interrupt_after_first_epoch(trainer: Trainer) -> None:
        if trainer.epoch == 0:
            raise KeyboardInterrupt

    Trainer(settings("straight")).train()
    with pytest.raises(KeyboardInterrupt):
        Trainer(settings("cut"), on_epoch_end=[interrupt_after_first_epoch]).train()
    last = tmp_path / "cut" / "weights" / "last.pt"
    Trainer({"resume": str(last), "verbose": False}).train()  # AutoAnchor does not run again
    straight, resumed = load_checkpoint(tmp_path / "straight" / "weights" / "last.pt"), load_checkpoint(last)
    assert resumed["meta"]["model_yaml"]["anchors"] == straight["meta"]["model_yaml"]["anchors"]
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
