"""TimmBackbone: timm features_only models as YAML rows, channels without a forward, local weights only."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from model_checks import randomize_batchnorms
from yololab.engine.exporter import export_onnx, onnx_max_abs_diff
from yololab.nn import DetectionModel, ModelConfigError
from yololab.nn.parse import build_layers, load_model_yaml
from yololab.nn.timm_backbone import TimmBackbone, load_local_state_dict

SMALL = "mobilenetv3_small_050"  # 1.6M params: keeps the weight-loading tests cheap


def _timm_cfg(args: list) -> dict:
    cfg = load_model_yaml("yolov8n-timm-resnet18.yaml")
    cfg["backbone"][0] = [-1, 1, "TimmBackbone", args]
    return cfg


def test_channels_come_from_feature_info_without_forward():
    with torch.device("meta"):
        assert [f.channels for f in TimmBackbone(3, "resnet18", [2, 3, 4]).feature_info] == [128, 256, 512]
    _, _, table, _ = build_layers(_timm_cfg([SMALL, [2, 3, 4]]))
    assert table[0].channels == [16, 24, 288] and [r.channels for r in table[1:4]] == [16, 24, 288]
    backbone = TimmBackbone(1, SMALL, [2, 3, 4]).eval()  # in_chans follows the row's input channels
    with torch.no_grad():
        outs = backbone(torch.rand(1, 1, 64, 64))
    assert [o.shape[1] for o in outs] == [f.channels for f in backbone.feature_info] == [16, 24, 288]
    assert [f.stride for f in backbone.feature_info] == [8, 16, 32] and [o.shape[-1] for o in outs] == [8, 4, 2]


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_are_loaded(tmp_path, suffix):
    full = randomize_batchnorms(timm.create_model(SMALL, pretrained=False)).eval()
    file = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(full.state_dict(), file)
    else:
        torch.save({"model": full.state_dict()}, file)
    backbone = TimmBackbone(3, SMALL, [2, 3, 4], weights=str(file)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = full.forward_intermediates(x, indices=[2, 3, 4], intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(backbone(x), expected, strict=True))


def test_unsafe_missing_or_wrong_weights_are_refused(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "pickled_module.pt")
    with pytest.raises(ValueError, match="pickled objects are refused"):
        load_local_state_dict(tmp_path / "pickled_module.pt")
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        TimmBackbone(3, SMALL, [2, 3, 4], weights=tmp_path / "absent.safetensors")
    partial = {k: v for k, v in timm.create_model(SMALL).state_dict().items() if not k.startswith("blocks.5")}
    save_file(partial, tmp_path / "partial.safetensors")
    with pytest.raises(RuntimeError, match="lack .* tensors of timm model 'mobilenetv3_small_050'"):
        TimmBackbone(3, SMALL, [2, 3, 4], weights=tmp_path / "partial.safetensors")


def test_fuse_applies_timm_reparameterization_only():
    x = torch.randn(1, 3, 64, 64)
    for name, indices in (("repvit_m0_9", [1, 2, 3]), (SMALL, [2, 3, 4])):
        backbone = randomize_batchnorms(TimmBackbone(3, name, indices)).eval()
        bns = sum(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
        with torch.no_grad():
            expected = backbone(x)
            fused = copy.deepcopy(backbone).fuse()
            for a, b in zip(fused(x), expected, strict=True):
                assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5
        left = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        # timm's RepViT re-parameterizes fully; plain timm BatchNorms are kept, never dropped
        assert left == (0 if name.startswith("repvit") else bns)


def test_example_config_builds_and_exports(tmp_path):
    model = DetectionModel("yolov8n-timm-resnet18.yaml").eval()
    backbone = next(m for m in model.modules() if isinstance(m, TimmBackbone))
    inside = {id(m) for m in backbone.modules()}
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    # timm's BatchNorm settings (its weights were trained with them) stay; the YOLO layers get eps 1e-3
    assert all((m.eps, m.momentum) == ((1e-5, 0.1) if id(m) in inside else (1e-3, 0.03)) for m in norms)
    assert model.info()[0].channels == [128, 256, 512] and model.stride.tolist() == [8.0, 16.0, 32.0]
    x = torch.rand(1, 3, 64, 64)
    file = export_onnx(model, tmp_path / "timm_resnet18.onnx", imgsz=64)
    with torch.no_grad():
        scale = model(x).abs().max().item()
    assert onnx_max_abs_diff(file, copy.deepcopy(model).fuse(), x) < 1e-4 * scale


def test_unknown_timm_model_names_the_row():
    with pytest.raises(ModelConfigError, match=r"row 0 .*not_a_timm_model"):
        build_layers(_timm_cfg(["not_a_timm_model", [2, 3, 4]]))
    with pytest.raises(ModelConfigError, match="out_indices must be a non-empty list"):
        build_layers(_timm_cfg([SMALL, "last"]))
