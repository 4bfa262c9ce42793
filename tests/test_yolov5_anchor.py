"""The anchor-based YOLOv5 head: YAML parsing, exact sizes, YOLOv5 state_dict names, decoding, priors, anchor order."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from yololab.nn import DetectionModel, ModelConfigError, load_model_yaml
from yololab.nn.anchor_head import AnchorDetect

# Parameters of the YOLOv5 v7.0 models at nc=80 (the repository's model summaries).
YOLOV5_PARAMS = {"n": 1_872_157, "s": 7_235_389, "m": 21_190_557}

# YOLOv5n state_dict entries as the YOLOv5 code names them (name -> shape), written from the architecture:
# the stem, a C3 and its bottleneck, SPPF, and the whole head.
YOLOV5N_KEYS = {
    "model.0.conv.weight": (16, 3, 6, 6),
    "model.0.bn.running_var": (16,),
    "model.2.cv1.conv.weight": (16, 32, 1, 1),
    "model.2.cv3.conv.weight": (32, 32, 1, 1),
    "model.2.m.0.cv2.conv.weight": (16, 16, 3, 3),
    "model.9.cv1.conv.weight": (128, 256, 1, 1),
    "model.9.cv2.conv.weight": (256, 512, 1, 1),
    "model.23.cv3.conv.weight": (256, 256, 1, 1),
    "model.24.anchors": (3, 3, 2),
    "model.24.m.0.weight": (255, 64, 1, 1),
    "model.24.m.0.bias": (255,),
    "model.24.m.1.weight": (255, 128, 1, 1),
    "model.24.m.1.bias": (255,),
    "model.24.m.2.weight": (255, 256, 1, 1),
    "model.24.m.2.bias": (255,),
}
COCO_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def repository_layout(scale_depth: float, scale_width: float) -> dict:
    """A model dict in the YOLOv5 repository's layout: depth_multiple / width_multiple instead of scales."""
    cfg = load_model_yaml("yolov5-anchor.yaml")
    cfg = {k: v for k, v in cfg.items() if k not in ("scales", "scale", "yaml_file")}
    return {**cfg, "depth_multiple": scale_depth, "width_multiple": scale_width}


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("scale", ["n", "s"])
def test_params_exact(scale):
    assert params(DetectionModel(f"yolov5{scale}-anchor.yaml")) == YOLOV5_PARAMS[scale]


@pytest.mark.slow
def test_params_exact_m():
    assert params(DetectionModel("yolov5m-anchor.yaml")) == YOLOV5_PARAMS["m"]


def test_repository_layout_yaml_builds_the_anchor_head(tmp_path):
    file = tmp_path / "yolov5s.yaml"
    file.write_text(yaml.safe_dump(repository_layout(0.33, 0.50), sort_keys=False))
    model = DetectionModel(file)
    assert isinstance(model.head, AnchorDetect)
    assert params(model) == YOLOV5_PARAMS["s"]


def test_state_dict_names_and_shapes_follow_yolov5():
    model = DetectionModel("yolov5n-anchor.yaml")
    state = model.state_dict()
    assert {k: tuple(state[k].shape) for k in YOLOV5N_KEYS if k in state} == YOLOV5N_KEYS
    assert sorted(k for k in state if k.startswith("model.24.")) == sorted(k for k in YOLOV5N_KEYS if "24." in k)
    clone = DetectionModel("yolov5n-anchor.yaml")
    clone.load_state_dict(state, strict=True)


def test_anchors_buffer_in_stride_units():
    model = DetectionModel("yolov5n-anchor.yaml")
    assert model.head.stride.tolist() == [8.0, 16.0, 32.0]
    pixels = model.head.anchors * model.head.stride.view(-1, 1, 1)
    assert torch.allclose(pixels.view(3, 6), torch.tensor(COCO_ANCHORS, dtype=torch.float))


def test_eval_output_has_the_detect_layout():
    model = DetectionModel("yolov5n-anchor.yaml", nc=3).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, 64, 64))
    assert y.shape == (2, 4 + 3, 3 * (8 * 8 + 4 * 4 + 2 * 2))
    assert (y[:, 4:] >= 0).all() and (y[:, 4:] <= 1).all()


def test_decoding_matches_hand_computed_values():
    head = AnchorDetect(nc=2, anchors=[[10, 20]], ch=[1])
    head.set_strides(torch.tensor([8.0]))
    ln3 = math.log(3.0)  # sigmoid(ln 3) = 0.75
    with torch.no_grad():
        head.m[0].weight.zero_()
        head.m[0].bias.copy_(torch.tensor([0.0, ln3, 0.0, ln3, 0.0, ln3, -ln3]))
    head.eval()
    y = head([torch.zeros(1, 1, 2, 2)])
    assert y.shape == (1, 6, 4)
    # cell (x=1, y=0): x = (2*0.5 - 0.5 + 1) * 8, y = (2*0.75 - 0.5 + 0) * 8, w = (2*0.5)^2 * 10, h = (2*0.75)^2 * 20,
    # class scores = objectness 0.5 x class probability (0.75, 0.25)
    expected = torch.tensor([12.0, 8.0, 10.0, 45.0, 0.375, 0.125])
    assert torch.allclose(y[0, :, 1], expected)
    assert torch.allclose(y[0, 0], torch.tensor([4.0, 12.0, 4.0, 12.0]))
    assert torch.allclose(y[0, 1], torch.tensor([8.0, 8.0, 16.0, 16.0]))


def test_bias_initialisation_from_priors():
    model = DetectionModel("yolov5n-anchor.yaml", nc=4)
    fresh = AnchorDetect(nc=4, anchors=COCO_ANCHORS, ch=[64, 128, 256])
    fresh.set_strides(torch.tensor([8.0, 16.0, 32.0]))
    for conv in fresh.m:
        conv.bias.data.zero_()
    fresh.init_biases()
    for conv, stride in zip(fresh.m, (8, 16, 32)):
        b = conv.bias.view(3, 9)
        assert torch.allclose(b[:, 4], torch.full((3,), math.log(8 / (640 / stride) ** 2)))
        assert torch.allclose(b[:, 5:], torch.full((3, 4), math.log(0.6 / (4 - 0.99999))))
        assert (b[:, :4] == 0).all()
    # the model's own head carries the same offsets on top of the default init (uniform within 1 / sqrt(fan_in))
    for conv, stride in zip(model.head.m, (8, 16, 32)):
        offset = (conv.bias.view(3, 9)[:, 4] - math.log(8 / (640 / stride) ** 2)).abs()
        assert (offset <= conv.in_channels ** -0.5).all()


def test_anchor_order_follows_strides():
    head = AnchorDetect(nc=1, anchors=COCO_ANCHORS[::-1], ch=[8, 8, 8])
    with pytest.warns(UserWarning, match="reversed"):
        head.set_strides(torch.tensor([8.0, 16.0, 32.0]))
    pixels = (head.anchors * head.stride.view(-1, 1, 1)).view(3, 6)
    assert torch.allclose(pixels, torch.tensor(COCO_ANCHORS, dtype=torch.float))


def test_anchors_per_level_as_int():
    cfg = {**repository_layout(0.33, 0.25), "anchors": 3}
    model = DetectionModel(cfg)
    assert isinstance(model.head, AnchorDetect) and not model.head.anchors_given
    assert model.head.anchors.shape == (3, 3, 2) and (model.head.anchors > 0).all()
    assert params(model) == YOLOV5_PARAMS["n"]


@pytest.mark.parametrize("change, message", [
    ({"head_args": ["nc"]}, "no head row"),
    ({"anchors": COCO_ANCHORS[:2]}, "2 anchor levels for 3 head inputs"),
    ({"anchors": [[10, 13, 16], [30, 61, 62], [116, 90, 156]]}, "even number"),
    ({"anchors": [[10, -13], [30, 61], [116, 90]]}, "positive"),
    ({"anchors": None, "drop_anchors": True}, "needs a top-level 'anchors:'"),
])
def test_unusable_anchor_yaml_is_an_error(change, message):
    cfg = repository_layout(0.33, 0.25)
    if "head_args" in change:
        cfg["head"][-1] = [*cfg["head"][-1][:3], change["head_args"]]
    elif change.get("drop_anchors"):
        del cfg["anchors"]
    else:
        cfg["anchors"] = change["anchors"]
    with pytest.raises(ModelConfigError, match=message):
        DetectionModel(cfg)


@pytest.mark.parametrize("name", ["yolov5n-anchor-slimneck.yaml", "yolov5n-anchor-repvit.yaml",
                                  "yolov5n-anchor-revcol.yaml"])
def test_research_modules_on_the_anchor_head(name):
    model = DetectionModel(name, nc=2)
    assert isinstance(model.head, AnchorDetect) and model.stride.tolist() == [8.0, 16.0, 32.0]
    feats = model.train()(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 21, 8, 8), (1, 21, 4, 4), (1, 21, 2, 2)]


def test_a_file_wide_activation_is_refused_not_ignored():
    cfg = {**load_model_yaml("yolov5n-anchor.yaml"), "activation": "nn.LeakyReLU(0.1)"}
    with pytest.raises(ModelConfigError, match="top-level 'activation: nn.LeakyReLU"):
        DetectionModel(cfg)
