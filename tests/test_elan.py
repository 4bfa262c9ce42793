"""ELAN, ELAN-H, E-ELAN (paper and YOLOv7-code forms), MPConv, SPPCSPC and the YOLOv7-style configs."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from conftest import load_benchmark
from model_checks import assert_fuses_and_exports
from yololab.nn import DetectionModel, ModelConfigError, load_model_yaml
from yololab.nn.conv import make_act
from yololab.nn.elan import EELAN, ELAN, ELANH, SPPCSPC, ConvAct, EELANSum, MPConv
from yololab.nn.parse import build_layers

CONFIGS = ["yolov7-tiny-af.yaml", "yolov7-af.yaml", "yolov8n-elan.yaml", "yolov8n-prn.yaml"]


def _assert_every_param_gets_gradient(module: nn.Module, x: torch.Tensor) -> None:
    module.train()
    (module(x) ** 2).mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def _capture_outputs(modules: list[nn.Module]) -> tuple[list[torch.Tensor], list]:
    outputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in modules]
    return outputs, hooks


def _transition_input(module: nn.Module, x: torch.Tensor, parts: list[nn.Module]) -> tuple[torch.Tensor, list]:
    """The tensor entering ``module.cv3`` and the outputs of ``parts`` (in call order) for input ``x``."""
    seen: list[torch.Tensor] = []
    pre = module.cv3.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    outputs, hooks = _capture_outputs(parts)
    with torch.no_grad():
        module.eval()(x)
    for h in [pre, *hooks]:
        h.remove()
    return seen[0], outputs


@pytest.mark.parametrize("blocks", [2, 3])
def test_elan_channel_arithmetic_and_newest_first_concat(blocks):
    elan = ELAN(16, 24, hidden=8, blocks=blocks, convs_per_block=2)
    assert elan.cv3.conv.in_channels == (2 + blocks) * 8
    assert [len(b) for b in elan.m] == [2] * blocks
    x = torch.randn(2, 16, 8, 8)
    assert elan(x).shape == (2, 24, 8, 8)
    concat, (short, main, *block_outs) = _transition_input(elan, x, [elan.cv1, elan.cv2, *elan.m])
    torch.testing.assert_close(concat, torch.cat([*block_outs[::-1], main, short], 1))


def test_elan_h_concatenates_every_half_width_conv():
    head = ELANH(32, 16, hidden=16, convs=4)
    assert [b[0].conv.out_channels for b in head.m] == [8] * 4
    assert head.cv3.conv.in_channels == 2 * 16 + 4 * 8 == 4 * 16
    x = torch.randn(1, 32, 8, 8)
    concat, (short, main, *conv_outs) = _transition_input(head, x, [head.cv1, head.cv2, *head.m])
    torch.testing.assert_close(concat, torch.cat([*conv_outs[::-1], main, short], 1))
    with pytest.raises(ValueError, match="even"):
        ELANH(32, 16, hidden=15)


def test_eelan_with_one_group_is_exactly_elan():
    elan, eelan = ELAN(16, 16, 8, 2, 2).eval(), EELAN(16, 16, 8, 2, 2, groups=1).eval()
    eelan.load_state_dict(elan.state_dict())
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(eelan(x), elan(x))


def test_eelan_expands_shuffles_and_merges_cardinality():
    eelan = EELAN(16, 32, hidden=8, blocks=2, convs_per_block=2, groups=2)
    assert eelan.cv1.conv.out_channels == 16  # expand: groups * hidden
    assert all(conv.conv.groups == 2 and conv.conv.in_channels == 16 for block in eelan.m for conv in block)
    assert eelan.cv3.conv.in_channels == 4 * 8  # merged back to ELAN's concat width
    x = torch.randn(2, 16, 8, 8)
    concat, (short, main, *block_outs) = _transition_input(eelan, x, [eelan.cv1, eelan.cv2, *eelan.m])
    merged = [t[:, :8] + t[:, 8:] for t in [*block_outs[::-1], main, short]]  # add the 2 groups of every part
    torch.testing.assert_close(concat, torch.cat(merged, 1))


def test_eelan_code_form_is_the_sum_of_full_elans():
    eelan = EELANSum(16, 32, hidden=8, copies=2).eval()
    assert len(eelan.m) == 2 and all(isinstance(m, ELAN) and len(m.m) == 3 for m in eelan.m)
    assert eelan.m[0].cv3.conv.in_channels == 5 * 8  # E6E: 3 blocks, 5 concatenated maps
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(eelan(x), eelan.m[0](x) + eelan.m[1](x))


@pytest.mark.parametrize("size", [16, 15])
def test_mp_halves_resolution_with_conv_branch_first(size):
    mp = MPConv(8, 16).eval()
    x = torch.randn(2, 8, size, size)
    with torch.no_grad():
        out = mp(x)
        half = (size + 1) // 2
        assert out.shape == (2, 16, half, half)
        torch.testing.assert_close(out[:, :8], mp.cv3(mp.cv2(x)))
        torch.testing.assert_close(out[:, 8:], mp.cv1(nn.functional.max_pool2d(x, 2, 2, ceil_mode=True)))
    with pytest.raises(ValueError, match="even"):
        MPConv(8, 15)


def test_sppcspc_full_and_tiny_channel_arithmetic():
    full, tiny = SPPCSPC(32, 16), SPPCSPC(32, 16, tiny=True)
    assert full.cv1.conv.out_channels == 16 and full.cv5.conv.in_channels == 4 * 16  # c_ = 2 * c2 * e
    assert all(isinstance(getattr(tiny, n), nn.Identity) for n in ("cv3", "cv4", "cv6"))
    assert sum(isinstance(m, nn.Conv2d) for m in full.modules()) == 7
    assert sum(isinstance(m, nn.Conv2d) for m in tiny.modules()) == 4
    x = torch.randn(1, 32, 9, 9)
    assert full(x).shape == tiny(x).shape == (1, 16, 9, 9)
    with pytest.raises(ValueError, match="odd"):
        SPPCSPC(32, 16, k=(5, 8))


def test_named_activations():
    conv = ConvAct(8, 8, 3, 1, "leaky_relu")
    assert isinstance(conv.act, nn.LeakyReLU) and conv.act.negative_slope == 0.1
    assert isinstance(ELAN(8, 8, 4, act="relu").cv3.act, nn.ReLU)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        make_act("swish")


def test_bad_elan_yaml_row_names_the_row():
    cfg = {"nc": 2, "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "ELAN", [16, 8, 0, 2]]],
           "head": [[[-1], 1, "Detect", ["nc"]]]}
    with pytest.raises(ModelConfigError, match="row 1.*blocks must be a positive int"):
        DetectionModel(cfg)
    cfg["backbone"][1] = [-1, 1, "ELAN", [16]]
    with pytest.raises(ModelConfigError, match="row 1.*hidden width"):
        DetectionModel(cfg)


@pytest.mark.parametrize("module", [
    ELAN(8, 16, 8, 2, 2), ELAN(8, 16, 4, 3, 2), ELANH(8, 16, 8), EELAN(8, 16, 4), EELANSum(8, 16, 4), MPConv(8, 16),
    SPPCSPC(8, 8), SPPCSPC(8, 8, tiny=True), ConvAct(8, 8, 3, 1, "leaky_relu"),
], ids=lambda m: type(m).__name__)
def test_modules_pass_gradient_to_every_parameter(module):
    _assert_every_param_gets_gradient(module, torch.randn(2, 8, 8, 8))


def test_elan_hidden_width_scales_with_the_model():
    model = DetectionModel("yolov8n-elan.yaml")
    elan = model.model[2]  # nominal ELAN(128, hidden 64) at width 0.25
    assert elan.cv1.conv.out_channels == 16 and elan.cv3.conv.out_channels == 32


@functools.lru_cache(maxsize=None)
def _built(cfg: str) -> DetectionModel:
    """One shared instance per config (tests that change it work on a deepcopy)."""
    torch.manual_seed(0)
    return DetectionModel(cfg)


def test_yolov7_row_channels_match_the_official_layout():
    table = load_benchmark("gradient_path_table")
    ours = [row.channels for row in _built("yolov7-af.yaml").table]
    _, _, official_rows, _ = build_layers(table.official_yolov7_cfg())
    for i, rows in table.OUR_TO_OFFICIAL.items():
        assert ours[i] == sum(official_rows[j].channels for j in rows), f"channels of our row {i}"


def test_yolov7_matches_the_official_rows_in_strides_and_outputs():
    """Narrowed to width 0.25 (same wiring, 1/16 of the cost): strides agree and copied weights give equal outputs."""
    table = load_benchmark("gradient_path_table")
    narrow = {"width_multiple": 0.25}
    ours = DetectionModel({**load_model_yaml("yolov7-af.yaml"), **narrow})
    official = DetectionModel({**table.official_yolov7_cfg(), **narrow})
    ours_shapes, official_shapes = table.row_shapes(ours, 64), table.row_shapes(official, 64)
    for i, rows in table.OUR_TO_OFFICIAL.items():
        assert ours_shapes[i][0] == sum(official_shapes[j][0] for j in rows), f"channels of our row {i}"
        assert {ours_shapes[i][1]} == {official_shapes[j][1] for j in rows}, f"stride of our row {i}"
    table.copy_weights_by_position(official, ours)  # same parameters, same order, same wiring
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), official.eval()(x), rtol=0, atol=0)


# Official YOLOv7-tiny rows (cfg/training/yolov7-tiny.yaml) -> (channels, stride), and our row for each.
TINY_OFFICIAL = {7: (64, 4), 14: (128, 8), 21: (256, 16), 28: (512, 32), 37: (256, 32), 47: (128, 16),
                 57: (64, 8), 65: (128, 16), 73: (256, 32), 74: (128, 8), 75: (256, 16), 76: (512, 32)}
TINY_OURS = {7: 2, 14: 4, 21: 6, 28: 8, 37: 9, 47: 14, 57: 19, 65: 22, 73: 25, 74: 26, 75: 27, 76: 28}


def test_yolov7_tiny_stage_outputs_match_the_official_layout_and_use_leaky_relu():
    model = _built("yolov7-tiny-af.yaml")
    shapes = load_benchmark("gradient_path_table").row_shapes(model, 64)
    for official_row, ours in TINY_OURS.items():
        assert shapes[ours] == TINY_OFFICIAL[official_row], f"our row {ours} vs official row {official_row}"
    body_acts = [m for m in model.model[:-1].modules() if isinstance(m, (nn.SiLU, nn.LeakyReLU, nn.ReLU))]
    assert body_acts and all(isinstance(a, nn.LeakyReLU) and a.negative_slope == 0.1 for a in body_acts)


@pytest.mark.parametrize("cfg", CONFIGS + ["yolov8s-elan.yaml", "yolov8s-prn.yaml"])
def test_config_outputs_at_strides_8_16_32_and_gradient_reaches_every_parameter(cfg):
    model = copy.deepcopy(_built(cfg)).train()
    assert model.stride.tolist() == [8, 16, 32]
    feats = model(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, model.head.no, 8, 12), (2, model.head.no, 4, 6),
                                               (2, model.head.no, 2, 3)]
    sum((f ** 2).mean() for f in feats).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{cfg}: no gradient reaches {name}"


@pytest.mark.parametrize("cfg", CONFIGS)
def test_config_fuses_and_exports_to_onnx_matching_pytorch(cfg, tmp_path):
    _, fused, _ = assert_fuses_and_exports(copy.deepcopy(_built(cfg)), tmp_path, imgsz=64)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
