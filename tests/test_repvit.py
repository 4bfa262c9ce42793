"""RepViT backbone: timm parity, re-parameterization, YAML wiring, timm weight loading and ONNX export."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from model_checks import randomize_batchnorms
from yololab.engine.exporter import export_onnx, onnx_max_abs_diff
from yololab.nn import DetectionModel, FeatureInfo, ModelConfigError
from yololab.nn.parse import build_layers, load_model_yaml
from yololab.nn.repvit import RepVGGDW, RepViT, SqueezeExcite, load_timm_repvit, repvit_stages


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _timm_features(variant: str, out_indices=(1, 2, 3)) -> nn.Module:
    return timm.create_model(f"repvit_{variant}", pretrained=False, features_only=True, out_indices=out_indices)


def _repvit_cfg(args: list, scale: str = "n") -> dict:
    """The yolov8-repvit config with other RepViT args."""
    cfg = load_model_yaml("yolov8-repvit.yaml")
    cfg["scale"] = scale
    cfg["backbone"][0] = [-1, 1, "RepViT", args]
    return cfg


@pytest.mark.parametrize("variant", ["m0_9", "m1_1"])
def test_params_and_features_match_timm(variant):
    ref = randomize_batchnorms(_timm_features(variant)).eval()
    ours = RepViT(3, variant)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert [f.channels for f in ours.feature_info] == ref.feature_info.channels()
    assert [f.stride for f in ours.feature_info] == ref.feature_info.reduction()
    container = nn.Sequential(ours)  # like a DetectionModel row, whose init sets BatchNorm eps to 1e-3
    for m in container.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
    assert load_timm_repvit(container, ref.state_dict()) is ours  # features_only keys (stages_N.*)
    assert all(m.eps == 1e-5 for m in ours.modules() if isinstance(m, nn.BatchNorm2d))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(ours.eval()(x), ref(x), strict=True):
            assert a.shape == b.shape and _max_rel_diff(a, b) < 1e-5


def test_truncated_out_indices_match_timm_params():
    ours = RepViT(3, "m0_9", out_indices=(0, 1, 2))
    ref = _timm_features("m0_9", (0, 1, 2))
    assert len(ours.stages) == 3 and ours.feature_info == [FeatureInfo(48, 4), FeatureInfo(96, 8), FeatureInfo(192, 16)]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_loads_full_timm_checkpoint_file(tmp_path):
    full = randomize_batchnorms(timm.create_model("repvit_m0_9", pretrained=False), seed=1).eval()
    save_file(full.state_dict(), tmp_path / "repvit_m0_9.safetensors")
    torch.save({"state_dict": full.state_dict()}, tmp_path / "repvit_m0_9.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = full.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        for file in ("repvit_m0_9.safetensors", "repvit_m0_9.pth"):
            ours = load_timm_repvit(RepViT(3, "m0_9", out_indices=(0, 1)), tmp_path / file).eval()  # stages 2-3 unused
            assert all(_max_rel_diff(a, b) < 1e-5 for a, b in zip(ours(x), expected, strict=True))


def test_loader_rejects_mismatched_weights(tmp_path):
    m0_9 = RepViT(3, "m0_9")
    with pytest.raises(ValueError, match="other shapes"):
        load_timm_repvit(m0_9, _timm_features("m1_0").state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        load_timm_repvit(m0_9, _timm_features("m1_1").state_dict())  # 12 blocks in stage 2, not 14
    with pytest.raises(ValueError, match="legacy"):
        load_timm_repvit(m0_9, timm.create_model("repvit_m1", pretrained=False).state_dict())
    with pytest.raises(ValueError, match="already fused"):
        load_timm_repvit(copy.deepcopy(m0_9).eval().fuse(), _timm_features("m0_9").state_dict())
    with pytest.raises(FileNotFoundError, match="not_there.pth"):
        load_timm_repvit(m0_9, tmp_path / "not_there.pth")


def test_repvggdw_fuses_into_one_depthwise_conv():
    mixer = randomize_batchnorms(RepVGGDW(16)).eval()
    with torch.no_grad():
        mixer.conv1x1.weight.normal_()
        mixer.conv1x1.bias.normal_()
        x = torch.randn(2, 16, 9, 7)
        expected = mixer(x)
        mixer.fuse()
        mixer.fuse()  # idempotent
        assert _max_rel_diff(mixer(x), expected) < 1e-5
    children = list(mixer.children())
    assert len(children) == 1 and isinstance(children[0], nn.Conv2d)
    assert children[0].kernel_size == (3, 3) and children[0].groups == 16 and children[0].bias is not None


def test_backbone_fuse_is_exact_and_leaves_no_batchnorm():
    model = randomize_batchnorms(RepViT(3, "m0_9", width=0.5)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        fused = copy.deepcopy(model).fuse()
        assert all(_max_rel_diff(a, b) < 1e-5 for a, b in zip(fused(x), expected, strict=True))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())


def test_se_on_every_other_block_and_never_on_downsample():
    model = RepViT(3, "m0_9")
    for stage, depth in zip(model.stages, (2, 2, 14, 2), strict=True):
        assert [isinstance(b.se, SqueezeExcite) for b in stage.blocks] == [j % 2 == 0 for j in range(depth)]
    assert not any(isinstance(s.downsample.pre_block.se, SqueezeExcite) for s in model.stages[1:])
    assert model.stages[2].blocks[0].se.fc1.out_channels == 48  # 192 / 4


def test_variant_scaling_and_errors():
    assert repvit_stages("m0.9") == repvit_stages("m0_9")
    half = repvit_stages("m0_9", depth=0.5, width=0.5)
    assert half.widths == (24, 48, 96, 192) and half.depths == (1, 1, 7, 1)
    with pytest.raises(ValueError, match="unknown RepViT variant 'm0_7'.*m0_9"):
        RepViT(3, "m0_7")
    with pytest.raises(ValueError, match="out_indices"):
        RepViT(3, "m0_9", out_indices=(3, 1))


def test_yaml_declares_channels_without_forward():
    for scale, widths in (("n", [48, 96, 192]), ("s", [96, 192, 384])):
        cfg = load_model_yaml(f"yolov8{scale}-repvit.yaml")
        _, _, table, _ = build_layers(cfg)
        assert table[0].channels == widths and [r.channels for r in table[1:4]] == widths
    _, _, table, _ = build_layers(_repvit_cfg(["m0_9"]))  # no reference scale: published widths at n
    assert table[0].channels == [96, 192, 384]
    _, _, table, _ = build_layers(_repvit_cfg(["m1_1", None, None, [0, 1, 2, 3]]))
    assert table[0].channels == [64, 128, 256, 512]


def test_yaml_errors_name_the_row():
    with pytest.raises(ModelConfigError, match=r"row 0 .*unknown RepViT variant 'mx'"):
        build_layers(_repvit_cfg(["mx"]))
    with pytest.raises(ModelConfigError, match="ref_width must be a positive number"):
        build_layers(_repvit_cfg(["m0_9", 0.33, "half"]))


def test_yolov8_repvit_fuse_and_onnx(tmp_path):
    model = randomize_batchnorms(DetectionModel("yolov8n-repvit.yaml")).eval()
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        fused = copy.deepcopy(model).fuse()
        out = fused(x)
    assert out.shape == (1, 84, 84) and _max_rel_diff(out, expected) < 1e-5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.model[0].modules())
    file = export_onnx(model, tmp_path / "yolov8n-repvit.onnx", imgsz=64)
    assert onnx_max_abs_diff(file, fused, x) < 1e-4 * out.abs().max().item()


def test_yolo11_repvit_builds_and_runs():
    model = DetectionModel("yolo11n-repvit.yaml").eval()
    assert model.info()[0].channels == [48, 96, 192]
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 84, 84)

