"""Slim-neck modules (GSConv, GS bottlenecks, VoV-GSCSP) and the slim-neck configs."""

from __future__ import annotations

import math

import onnx
import pytest
import torch
from torch import nn

from model_checks import assert_every_parameter_has_gradient, assert_fuses_and_exports
from yololab.nn import DetectionModel, registered
from yololab.nn.slimneck import GSBottleneck, GSBottleneckC, GSConv, VoVGSCSP, VoVGSCSPC, channel_shuffle
from yololab.utils.profile import count_gflops, count_params


def test_slimneck_modules_are_registered():
    reg = registered()
    for name in ("GSConv", "GSBottleneck", "GSBottleneckC", "VoVGSCSP", "VoVGSCSPC"):
        assert name in reg
    assert reg["VoVGSCSP"].takes_repeats and reg["VoVGSCSPC"].takes_repeats


def test_channel_shuffle_interleaves_halves_and_is_invertible():
    c = 8
    x = torch.arange(c, dtype=torch.float).reshape(1, c, 1, 1).expand(2, c, 3, 3).contiguous()
    y = channel_shuffle(x, 2)
    order = y[0, :, 0, 0].tolist()
    assert order == [0, 4, 1, 5, 2, 6, 3, 7]
    assert sorted(order) == list(range(c))  # a permutation
    assert all(a < c // 2 <= b for a, b in zip(order[0::2], order[1::2]))  # every pair mixes both halves
    assert torch.equal(channel_shuffle(y, c // 2), x)  # the inverse shuffle restores the input
    assert torch.equal(y[1], y[0])  # the batch axis is untouched


def test_channel_shuffle_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="7 channels"):
        channel_shuffle(torch.zeros(1, 7, 2, 2), 2)


@pytest.mark.parametrize("c1, c2, k, s, b, h, w", [
    (8, 16, 1, 1, 2, 8, 8),
    (16, 32, 3, 2, 1, 7, 9),
    (3, 8, 3, 2, 2, 5, 6),
    (32, 64, 3, 1, 1, 11, 13),
])
def test_gsconv_shapes(c1, c2, k, s, b, h, w):
    y = GSConv(c1, c2, k, s).eval()(torch.randn(b, c1, h, w))
    assert y.shape == (b, c2, math.ceil(h / s), math.ceil(w / s))


def test_gsconv_output_is_dense_and_depthwise_interleaved():
    m = GSConv(8, 12, 3, 2).eval()
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        dense = m.cv1(x)
        y = m(x)
    assert torch.allclose(y[:, 0::2], dense)
    assert torch.allclose(y[:, 1::2], m.cv2(dense))
    assert m.cv2.conv.groups == 6 and m.cv2.conv.kernel_size == (5, 5) and m.cv1.conv.stride == (2, 2)


def test_gsconv_rejects_odd_output_channels():
    with pytest.raises(ValueError, match="c2=9"):
        GSConv(8, 9)


@pytest.mark.parametrize("cls", [GSBottleneck, GSBottleneckC, VoVGSCSP, VoVGSCSPC])
@pytest.mark.parametrize("c1, c2, h, w", [(16, 16, 8, 8), (24, 32, 7, 5), (64, 32, 3, 3)])
def test_block_shapes(cls, c1, c2, h, w):
    y = cls(c1, c2).eval()(torch.randn(1, c1, h, w))
    assert y.shape == (1, c2, h, w)


@pytest.mark.parametrize("module", [
    GSConv(8, 16, 3, 2), GSBottleneck(16, 24), GSBottleneckC(16, 32),
    VoVGSCSP(16, 32, 2), VoVGSCSPC(32, 16, 3),
], ids=lambda m: type(m).__name__)
def test_every_parameter_gets_a_gradient(module):
    c1 = next(p for p in module.parameters() if p.dim() == 4).shape[1]  # first conv's input channels
    assert_every_parameter_has_gradient(module, module.train()(torch.randn(2, c1, 9, 7)))


def test_gs_bottleneck_shortcuts():
    dense, cheap = GSBottleneck(16, 32), GSBottleneckC(16, 32)
    assert dense.shortcut.conv.groups == 1 and dense.shortcut.conv.kernel_size == (1, 1)
    assert cheap.shortcut.conv.groups == 16 and cheap.shortcut.conv.kernel_size == (3, 3)
    assert isinstance(dense.shortcut.act, nn.Identity) and isinstance(dense.conv_lighting[1].cv1.act, nn.Identity)


@pytest.mark.parametrize("cls, block", [(VoVGSCSP, GSBottleneck), (VoVGSCSPC, GSBottleneckC)])
def test_vovgscsp_honours_repeats(cls, block):
    sizes = {n: count_params(cls(32, 64, n)) for n in (1, 2, 3)}
    assert [len(cls(32, 64, n).gsb) for n in (1, 2, 3)] == [1, 2, 3]
    assert all(type(b) is block for b in cls(32, 64, 3).gsb)
    one_block = count_params(block(32, 32, e=1.0))
    assert sizes[2] - sizes[1] == sizes[3] - sizes[2] == one_block


def test_vovgscsp_rejects_bad_widths():
    with pytest.raises(ValueError, match="hidden width"):
        VoVGSCSP(16, 6)
    with pytest.raises(ValueError, match="n >= 1"):
        VoVGSCSP(16, 16, 0)


def test_yaml_repeats_are_depth_scaled():
    for scale, expected in (("n", 1), ("m", 2)):
        model = DetectionModel(f"yolov5{scale}-slimneck.yaml")
        blocks = [m for m in model.model if isinstance(m, VoVGSCSP)]
        assert len(blocks) == 4 and all(len(b.gsb) == expected for b in blocks)


@pytest.mark.parametrize("family, neck_block, baseline_block", [("yolov5", 13, 13), ("yolov8", 12, 12)])
def test_slimneck_keeps_the_backbone_and_slims_the_neck(family, neck_block, baseline_block):
    slim, base = DetectionModel(f"{family}n-slimneck.yaml"), DetectionModel(f"{family}n.yaml")
    backbone = [f"model.{i}." for i in range(10)]
    pick = lambda sd: {k: v.shape for k, v in sd.items() if k.startswith(tuple(backbone))}  # noqa: E731
    assert pick(slim.state_dict()) == pick(base.state_dict())
    neck_types = {layer.type for layer in slim.model[10:-1]}
    assert neck_types <= {"GSConv", "VoVGSCSP", "nn.Upsample", "Concat"}
    assert {"GSConv", "VoVGSCSP"} <= neck_types
    assert slim.model[neck_block].type == "VoVGSCSP" and base.model[baseline_block].type in ("C3", "C2f")


@pytest.mark.parametrize("family", ["yolov5", "yolov8"])
@pytest.mark.parametrize("scale", ["n", "s", "m"])
def test_slimneck_is_lighter_than_its_baseline(family, scale):
    slim, base = DetectionModel(f"{family}{scale}-slimneck.yaml"), DetectionModel(f"{family}{scale}.yaml")
    assert slim.stride.tolist() == [8.0, 16.0, 32.0]  # built and run at this scale
    assert count_params(slim) < count_params(base)
    assert count_gflops(slim, 128) < count_gflops(base, 128)  # conv FLOPs scale with the image area


@pytest.mark.parametrize("cfg", ["yolov5n-slimneck.yaml", "yolov8n-slimneck.yaml"])
def test_slimneck_model_trains_every_parameter(cfg):
    model = DetectionModel(cfg).train()
    assert_every_parameter_has_gradient(model, model(torch.randn(2, 3, 64, 96)))


@pytest.mark.parametrize("cfg", ["yolov5n-slimneck.yaml", "yolov8n-slimneck.yaml"])
def test_slimneck_fuses_and_exports_to_onnx(cfg, tmp_path):
    model = DetectionModel(cfg)
    y, fused, file = assert_fuses_and_exports(model, tmp_path)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert y.shape == (1, 4 + 80, 12 * 12 + 6 * 6 + 3 * 3)  # decoded boxes + scores at strides 8/16/32
    perms = [list(n.attribute[0].ints) for n in onnx.load(str(file)).graph.node if n.op_type == "Transpose"]
    shuffles = [p for p in perms if len(p) == 5]
    assert len(shuffles) == sum(isinstance(m, GSConv) for m in model.modules())
    assert all(p[0] == 0 for p in shuffles)  # the shuffle keeps the batch axis first
