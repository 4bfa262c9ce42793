"""Foundation: YAML parsing semantics, exact baseline sizes, shapes, fusing."""

from __future__ import annotations

import pytest
import torch

from yololab import YOLO
from yololab.nn import DetectionModel
from yololab.nn.parse import load_model_yaml, scale_from_name
from yololab.nn.registry import BuildContext
from yololab.utils.profile import count_gflops, count_params

EXPECTED = {  # name: (params at nc=80, GFLOPs at 640 by FlopCounterMode on the reference architecture)
    "yolov8n": (3_157_200, 8.74),
    "yolov8s": (11_166_560, 28.6),
    "yolov5n": (2_654_816, 7.72),
    "yolo11n": (2_624_080, 6.54),
    "yolo11s": (9_458_752, 21.59),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_baseline_params_and_gflops(name):
    model = DetectionModel(f"{name}.yaml")
    params, gflops = EXPECTED[name]
    assert count_params(model) == params
    assert count_gflops(model, 640) == pytest.approx(gflops, rel=0.01)


def test_scale_letter_from_file_name():
    assert scale_from_name("yolov8n.yaml") == ("yolov8.yaml", "n")
    assert scale_from_name("yolo11s-repvit.yaml") == ("yolo11-repvit.yaml", "s")
    assert scale_from_name("yolov8-p2.yaml") == ("yolov8-p2.yaml", None)
    assert load_model_yaml("yolov8m.yaml")["scale"] == "m"


def test_width_and_depth_rules():
    ctx = BuildContext("n", 0.33, 0.25, 1024, 80)
    assert [ctx.depth_of(n) for n in (1, 2, 3, 6, 9)] == [1, 1, 1, 2, 3]
    assert BuildContext("m", 0.67, 0.75, 768, 80).depth_of(6) == 4
    assert BuildContext("x", 0.5, 1, 512, 80).depth_of(5) == 2  # banker's rounding: 2.5 -> 2
    assert ctx.width_of(1024) == 256 and ctx.width_of(64) == 16
    assert BuildContext("m", 0.67, 0.75, 768, 80).width_of(1024) == 576


def test_layer_table_matches_reference_shapes():
    rows = DetectionModel("yolov8n.yaml").info()
    assert [r.channels for r in rows[:10]] == [16, 32, 32, 64, 64, 128, 128, 256, 256, 256]
    assert rows[22].module == "Detect" and rows[22].source == [15, 18, 21]


def test_state_dict_keys_follow_reference_layout():
    keys = DetectionModel("yolov8n.yaml").state_dict().keys()
    assert "model.22.cv2.0.2.bias" in keys and "model.22.dfl.conv.weight" in keys
    assert "model.2.m.0.cv1.conv.weight" in keys and "model.9.cv2.bn.running_var" in keys
    yolo11 = DetectionModel("yolo11n.yaml").state_dict().keys()
    assert "model.23.cv3.0.0.0.conv.weight" in yolo11  # depthwise class branch
    assert "model.10.m.0.attn.qkv.conv.weight" in yolo11


@pytest.mark.parametrize("shape", [(320, 320), (640, 640), (256, 416), (160, 96)])
def test_output_shapes(shape):
    model = DetectionModel("yolov8n.yaml", nc=3).eval()
    h, w = shape
    y = model(torch.rand(2, 3, h, w))
    anchors = sum((h // s) * (w // s) for s in (8, 16, 32))
    assert y.shape == (2, 4 + 3, anchors)
    model.train()
    feats = model(torch.rand(1, 3, h, w))
    assert [f.shape[-2:] for f in feats] == [(h // s, w // s) for s in (8, 16, 32)]


def test_p2_model_has_stride_4():
    model = DetectionModel("yolov8n-p2.yaml")
    assert model.stride.tolist() == [4, 8, 16, 32]


def test_detect_bias_init():
    model = DetectionModel("yolov8n.yaml", nc=3)
    head = model.head
    assert torch.all(head.cv2[0][-1].bias == 2.0)
    expected = torch.log(torch.tensor(5 / 3 / (640 / 8) ** 2))
    assert torch.allclose(head.cv3[0][-1].bias, expected)
    assert all(m.eps == 1e-3 and m.momentum == 0.03 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("name", ["yolov8n", "yolov5n", "yolo11n"])
def test_fuse_keeps_outputs(name):
    torch.manual_seed(0)
    model = DetectionModel(f"{name}.yaml")
    model.train()
    for _ in range(2):  # give BatchNorms non-trivial running statistics
        model(torch.rand(2, 3, 128, 128))
    model.eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        before = model(x)
        model.fuse()
        after = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5 * before.abs().max().item())


def test_yolo_api_info():
    yolo = YOLO("yolov8n.yaml")
    summary = yolo.info(imgsz=320, verbose=False)
    assert summary["params"] == 3_157_200 and summary["layers"] == 23
    assert summary["gflops"] == pytest.approx(8.744 / 4, rel=0.01)
    assert yolo.fuse() is yolo
