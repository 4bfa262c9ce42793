"""SPConv (split representative / redundant channels), C2f_SPConv and the yolov8-spconv config."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from model_checks import assert_every_parameter_has_gradient, assert_fuses_and_exports, randomize_batchnorms
from yololab.nn import DetectionModel, ModelConfigError, registered
from yololab.nn.split_conv import C2f_SPConv, SPBottleneck, SPConv, SplitConv, split_channels
from yololab.utils.profile import count_gflops, count_params


def test_spconv_modules_are_registered():
    reg = registered()
    assert "SPConv" in reg and "C2f_SPConv" in reg and reg["C2f_SPConv"].takes_repeats


@pytest.mark.parametrize("c1, ratio", [(3, 0.5), (8, 0.5), (12, 0.25), (16, 0.125), (20, 0.5), (24, 0.9), (7, 0.3)])
def test_split_channels_gives_a_valid_split(c1, ratio):
    c_rep, c_red = split_channels(c1, ratio)
    assert c_rep + c_red == c1 and c_rep % 2 == 0 and c_rep >= 2 and c_red >= 1
    assert abs(c_rep - c1 * ratio) <= 1 or c_red == 1  # nearest even count unless clamped


@pytest.mark.parametrize("c1, ratio, message", [(2, 0.5, "at least 3 input channels"), (16, 0.0, "ratio"),
                                                (16, 1.0, "ratio")])
def test_split_channels_rejects_invalid_splits(c1, ratio, message):
    with pytest.raises(ValueError, match=message):
        split_channels(c1, ratio)


def test_split_conv_rejects_odd_output_channels_and_even_kernels():
    with pytest.raises(ValueError, match="c2=15"):
        SplitConv(16, 15)
    with pytest.raises(ValueError, match="k=2"):
        SplitConv(16, 16, k=2)


def test_config_error_names_the_row():
    cfg = {"backbone": [[-1, 1, SPConv.__name__, [16, 3, 2]]], "head": [[-1, 1, "Conv", [16, 1, 1]]]}
    with pytest.raises(ModelConfigError, match=r"row 0 .*SPConv.*at least 3 input channels"):
        DetectionModel(cfg, ch=2)


@pytest.mark.parametrize("c1, c2, s, b, h, w", [
    (16, 16, 1, 2, 8, 8), (16, 32, 2, 1, 7, 9), (12, 8, 2, 2, 5, 5), (3, 16, 2, 1, 11, 6), (24, 24, 2, 2, 1, 3),
])
def test_spconv_shapes_including_odd_sizes_and_batch_1(c1, c2, s, b, h, w):
    x = torch.randn(b, c1, h, w)
    for module in (SplitConv(c1, c2, 3, s), SPConv(c1, c2, 3, s)):
        assert module.eval()(x).shape == (b, c2, math.ceil(h / s), math.ceil(w / s))


def test_spconv_train_mode_batch_1():
    y = SPConv(16, 32, 3, 2).train()(torch.randn(1, 16, 9, 7))
    assert y.shape == (1, 32, 5, 4) and torch.isfinite(y).all()


def test_spconv_act_is_resolved_like_conv():
    assert isinstance(SPConv(8, 8).act, nn.SiLU) and isinstance(SPConv(8, 8, act="leaky_relu").act, nn.LeakyReLU)
    assert isinstance(SPConv(8, 8, act=False).act, nn.Identity) and isinstance(SPConv(8, 8, act=nn.ReLU()).act, nn.ReLU)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        SPConv(8, 8, act="swish")


def test_fusion_weights_are_a_per_channel_softmax():
    torch.manual_seed(0)
    module = SplitConv(16, 24, 3, 2).eval()
    x = torch.randn(3, 16, 9, 9)
    with torch.no_grad():
        rep, red = module.paths(x)
        w = module.fusion_weights(rep, red)
        y = module(x)
    assert w.shape == (3, 2, 24, 1, 1)
    assert torch.allclose(w.sum(1), torch.ones(3, 24, 1, 1)) and (w > 0).all() and (w < 1).all()
    expected = torch.stack((rep.mean((2, 3)), red.mean((2, 3))), 1).softmax(1)
    assert torch.allclose(w[..., 0, 0], expected)
    assert torch.allclose(y, w[:, 0] * rep + w[:, 1] * red)


def test_fusion_is_per_sample():
    """Each image gets its own weights: a batch gives the same result as the images one at a time."""
    module = SPConv(16, 16, 3, 1).eval()
    x = torch.randn(4, 16, 6, 6)
    with torch.no_grad():
        assert torch.allclose(module(x), torch.cat([module(xi[None]) for xi in x]), atol=1e-6)


def test_split_conv_layout():
    module = SplitConv(32, 64, 3, 2, ratio=0.25)
    assert (module.c_rep, module.c_red) == (8, 24)
    assert module.gwc.groups == 2 and module.gwc.in_channels == 8 and module.gwc.stride == (2, 2)
    assert module.pwc.kernel_size == (1, 1) and module.conv_red.in_channels == 24 and module.conv_red.bias is None
    assert isinstance(module.pool, nn.AvgPool2d) and module.pool.ceil_mode
    assert isinstance(SplitConv(32, 64, 3, 1).pool, nn.Identity)


@pytest.mark.parametrize("module, c1", [
    (SPConv(16, 32, 3, 1), 16), (SPConv(12, 32, 3, 2), 12),
    (SPBottleneck(16, 16), 16), (C2f_SPConv(24, 32, 2, True), 24),
], ids=["SPConv-s1", "SPConv-s2", "SPBottleneck", "C2f_SPConv"])
def test_every_parameter_gets_a_gradient(module, c1):
    assert_every_parameter_has_gradient(module, module.train()(torch.randn(2, c1, 9, 7)))


def test_c2f_spconv_honours_repeats():
    blocks = [C2f_SPConv(32, 64, n, True) for n in (1, 2, 3)]
    assert [len(b.m) for b in blocks] == [1, 2, 3]
    assert all(isinstance(m.cv1, SPConv) and isinstance(m.cv2, SPConv) and m.add for m in blocks[2].m)
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1 for m in blocks[2].modules())


@pytest.mark.parametrize("stride", [1, 2])
def test_fuse_folds_the_path_batchnorms(stride):
    torch.manual_seed(0)
    module = randomize_batchnorms(SPConv(16, 32, 3, stride)).eval()
    fused = copy.deepcopy(module)
    fused.conv.fuse()
    assert isinstance(fused.conv.bn_rep, nn.Identity) and isinstance(fused.conv.bn_red, nn.Identity)
    assert isinstance(fused.bn, nn.BatchNorm2d)  # the BN after the data-dependent mixing cannot be folded
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        assert torch.allclose(module(x), fused(x), atol=1e-5)


def test_spconv_onnx_odd_sizes_dynamic_axes(tmp_path):
    module = randomize_batchnorms(SPConv(16, 32, 3, 2)).eval()
    file = tmp_path / "spconv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 16, 7, 9),), str(file), opset_version=17, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}})
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    for shape in ((2, 16, 7, 9), (1, 16, 5, 11), (3, 16, 8, 8)):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = module(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5


def test_spconv_model_fuses_and_exports_to_onnx(tmp_path):
    y, _, _ = assert_fuses_and_exports(DetectionModel("yolov8n-spconv.yaml"), tmp_path)
    assert y.shape == (1, 4 + 80, 12 * 12 + 6 * 6 + 3 * 3)  # decoded boxes + scores at strides 8/16/32


def test_spconv_model_trains_every_parameter():
    model = DetectionModel("yolov8n-spconv.yaml").train()
    assert_every_parameter_has_gradient(model, model(torch.randn(2, 3, 64, 96)))


def test_spconv_config_layout():
    model = DetectionModel("yolov8n-spconv.yaml")
    types = [layer.type for layer in model.model]
    assert types[0] == "Conv" and types.count("SPConv") == 6 and types.count("C2f_SPConv") == 8
    assert "C2f" not in types and all(len(model.model[i].m) == 1 for i in (12, 15, 18, 21))


@pytest.mark.parametrize("scale", ["n", "s", "m"])
def test_spconv_is_lighter_than_yolov8(scale):
    spconv, base = DetectionModel(f"yolov8{scale}-spconv.yaml"), DetectionModel(f"yolov8{scale}.yaml")
    assert spconv.stride.tolist() == [8.0, 16.0, 32.0]  # built and run at this scale
    assert count_params(spconv) < count_params(base)
    assert count_gflops(spconv, 128) < count_gflops(base, 128)
