"""Fusing and ONNX export of every shipped model config, export settings, and the ONNX-backed model."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
import yaml
from torch import nn

from model_checks import randomize_batchnorms
from tiny_training import TINY_MODEL
from yololab import YOLO
from yololab.checkpoint import save_checkpoint
from yololab.cli import main
from yololab.engine.exporter import OnnxModel, export, onnx_max_abs_diff, parse_names
from yololab.nn import DetectionModel
from yololab.nn.parse import MODELS_DIR, load_model_yaml

CONFIGS = sorted(MODELS_DIR.glob("*.yaml"))
IMGSZ = 64


def build(cfg_file) -> DetectionModel:
    """The model of a shipped config at scale n (or the file's only / first scale) with nc=3."""
    cfg = load_model_yaml(cfg_file)
    if "n" in (cfg.get("scales") or {}):
        cfg["scale"] = "n"
    return DetectionModel(cfg, nc=3)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest deviation of boxes and of scores, each relative to its own largest magnitude."""
    errors = [(o - r).abs().max() / r.abs().max().clamp(min=1e-12) for o, r in ((out[:, :4], ref[:, :4]),
                                                                              (out[:, 4:], ref[:, 4:]))]
    return max(e.item() for e in errors)


def foldable_batchnorms(model: nn.Module) -> list[str]:
    """BatchNorms still held directly by a module that defines ``fuse()`` (they should have been folded)."""
    return [f"{name}.{child_name}" for name, module in model.named_modules() if callable(getattr(module, "fuse", None))
            for child_name, child in module.named_children() if isinstance(child, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("cfg_file", CONFIGS, ids=lambda p: p.stem)
def test_fuse_keeps_eval_outputs(cfg_file):
    model = build(cfg_file).eval()
    randomize_batchnorms(model)
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        before = model(x)
        model.fuse()
        after = model(x)
    assert relative_error(after, before) < 1e-5
    assert foldable_batchnorms(model) == []
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) < n_bn


@pytest.mark.slow
@pytest.mark.parametrize("cfg_file", CONFIGS, ids=lambda p: p.stem)
def test_every_config_exports_to_onnx(cfg_file, tmp_path):
    model = build(cfg_file).eval()
    randomize_batchnorms(model)
    result = export(model, tmp_path / "model.onnx", imgsz=IMGSZ, simplify=False, verbose=False)
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    out = OnnxModel(result["file"])(x)
    assert out.shape == ref.shape
    assert relative_error(out, ref) < 1e-4
    assert result["max_abs_diff"] < 1e-3 * (1 + ref.abs().max().item())


def test_export_writes_metadata_and_slims(tmp_path):
    model = DetectionModel(TINY_MODEL, nc=2).eval()
    model.names = {0: "cat", 1: "dog"}
    result = export(model, tmp_path / "m.onnx", imgsz=64, simplify=True, verbose=False)
    assert result["simplified"] and result["size_mb"] > 0 and result["opset"] == 17 and result["max_abs_diff"] < 1e-3
    meta = {p.key: p.value for p in onnx.load(result["file"]).metadata_props}
    assert json.loads(meta["names"]) == {"0": "cat", "1": "dog"} and meta["stride"] == "32"
    onnx_model = OnnxModel(result["file"])
    assert onnx_model.names == {0: "cat", 1: "dog"} and onnx_model.input_shape == (64, 64)


def test_dynamic_export_takes_any_batch_and_size(tmp_path):
    model = DetectionModel(TINY_MODEL, nc=2).eval()
    randomize_batchnorms(model)
    onnx_model = OnnxModel(export(model, tmp_path / "d.onnx", imgsz=64, dynamic=True, simplify=False,
                                  verbose=False)["file"])
    assert onnx_model.input_shape is None
    x = torch.rand(3, 3, 96, 128)
    with torch.no_grad():
        ref = model(x)
    assert relative_error(onnx_model(x), ref) < 1e-4


def test_names_metadata_of_other_exporters_is_read():
    assert parse_names('{"0": "cat"}') == {0: "cat"}
    assert parse_names("{0: 'person', 1: 'bicycle'}") == {0: "person", 1: "bicycle"}  # a Python dict literal
    assert parse_names("not names") == {}


def test_fixed_batch_model_serves_other_batch_sizes(tmp_path):
    model = DetectionModel(TINY_MODEL, nc=2).eval()
    file = export(model, tmp_path / "b2.onnx", imgsz=64, batch=2, simplify=False, verbose=False)["file"]
    x = torch.rand(3, 3, 64, 64)
    assert onnx_max_abs_diff(file, model, x) < 1e-3
    with pytest.raises(ValueError, match="exported for input"):
        OnnxModel(file)(torch.rand(1, 3, 96, 96))


def test_export_rejects_bad_settings(tmp_path):
    model = DetectionModel(TINY_MODEL, nc=2)
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export(model, tmp_path / "m.tflite", format="tflite", imgsz=64)
    with pytest.raises(ValueError, match="half=true .* CUDA"):
        export(model, tmp_path / "m.onnx", imgsz=64, half=True)
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        OnnxModel(tmp_path / "missing.onnx")


def test_export_command_json(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_MODEL))
    args = ["export", f"model={cfg}", "imgsz=64", "simplify=false", f"project={tmp_path}", "name=exp", "json=true"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) >= {"file", "max_abs_diff", "opset", "size_mb"}
    assert result["file"] == str(tmp_path / "exp" / "tiny.onnx") and result["max_abs_diff"] < 1e-3
    assert OnnxModel(result["file"]).input_shape == (64, 64)


def test_yolo_export_writes_beside_the_checkpoint(tmp_path):
    model = DetectionModel(TINY_MODEL, nc=2)
    ckpt = save_checkpoint(tmp_path / "weights" / "best.pt", model.state_dict(), {"model_yaml": model.yaml})
    result = YOLO(ckpt).export(imgsz=64, simplify=False, verbose=False)
    assert result["file"] == str(tmp_path / "weights" / "best.onnx") and result["max_abs_diff"] < 1e-3
