"""The Slim-neck authors' own YAMLs: their YOLOv5 port's and YOLOv8 port's blocks under the same names, each file
building its own variant (by the file's layout), without the ports' dead layers, and the public signatures."""

from __future__ import annotations

import warnings

import pytest
import torch

from model_checks import assert_fuses_and_exports
from yololab import YOLO
from yololab.nn import DetectionModel, load_model_yaml
from yololab.nn.slimneck import (
    GSBottleneck,
    GSBottleneckCV5,
    GSConv,
    GSConvV5,
    VoVGSCSP,
    VoVGSCSPC,
    VoVGSCSPCV5,
    VoVGSCSPCV8,
    VoVGSCSPV5,
    VoVGSCSPV8,
)
from yololab.utils.profile import count_params

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
V5_BACKBONE = [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
               [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]],
               [-1, 9, "C3", [512]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C3", [1024]],
               [-1, 1, "SPPF", [1024, 5]]]


def slimneck_v5(block: str, depth: float, width: float) -> dict:
    """The authors' YOLOv5 slim-neck layout (written from the paper's figure / seed-modules.md 2.3): GSConv laterals
    and downsamplers, ``block`` (VoVGSCSP or VoVGSCSPC) ``[c2, False]`` for every neck C3, the anchor head."""
    up = [-1, 1, "nn.Upsample", ["None", 2, "nearest"]]
    head = [[-1, 1, "GSConv", [512, 1, 1]], up, [[-1, 6], 1, "Concat", [1]], [-1, 3, block, [512, False]],
            [-1, 1, "GSConv", [256, 1, 1]], up, [[-1, 4], 1, "Concat", [1]], [-1, 3, block, [256, False]],
            [-1, 1, "GSConv", [256, 3, 2]], [[-1, 14], 1, "Concat", [1]], [-1, 3, block, [512, False]],
            [-1, 1, "GSConv", [512, 3, 2]], [[-1, 10], 1, "Concat", [1]], [-1, 3, block, [1024, False]],
            [[17, 20, 23], 1, "Detect", ["nc", "anchors"]]]
    return {"nc": 80, "depth_multiple": depth, "width_multiple": width, "anchors": ANCHORS,
            "backbone": V5_BACKBONE, "head": head}


def yolov8_sn() -> dict:
    """The authors' yolov8-sn layout: GSConv downsamplers in the backbone, VoVGSCSP for the P3/P4 neck blocks, and a
    VoVGSCSP row after the P5 C2f that the head does not read."""
    cfg = load_model_yaml("yolov8.yaml")
    backbone = [list(r) for r in cfg["backbone"]]
    for i in (3, 5, 7):
        backbone[i] = [-1, 1, "GSConv", backbone[i][3]]
    up = [-1, 1, "nn.Upsample", ["None", 2, "nearest"]]
    head = [up, [[-1, 6], 1, "Concat", [1]], [-1, 3, "C2f", [512]], up, [[-1, 4], 1, "Concat", [1]],
            [-1, 3, "VoVGSCSP", [256]], [-1, 1, "GSConv", [256, 3, 2]], [[-1, 12], 1, "Concat", [1]],
            [-1, 3, "VoVGSCSP", [512]], [-1, 1, "GSConv", [512, 3, 2]], [[-1, 9], 1, "Concat", [1]],
            [-1, 3, "C2f", [1024]], [-1, 3, "VoVGSCSP", [1024]], [[15, 18, 21], 1, "Detect", ["nc"]]]
    return {"nc": 80, "scales": cfg["scales"], "scale": "n", "backbone": backbone, "head": head}


def test_the_authors_snc_yolov5s_builds_the_params_its_forward_uses():
    model = DetectionModel(slimneck_v5("VoVGSCSPC", 0.33, 0.50))
    assert model.layout[0] == "yolov5" and count_params(model) == 6_038_381
    assert all(type(model.model[i]) is VoVGSCSPCV5 for i in (13, 17, 20, 23))
    assert all(type(b) is GSBottleneckCV5 for b in model.model[13].gsb)
    extra = sum(d["extra_params"] for d in model.reference_differences())
    assert count_params(model) + extra == 6_961_133  # what the authors' code holds, dead 'res' convs included
    summary = YOLO(model=slimneck_v5("VoVGSCSPC", 0.33, 0.50)).info(imgsz=64, verbose=False)
    assert summary["layout"] == "yolov5" and len(summary["reference_differences"]) == 4


def test_the_authors_slimneck_yolov5n_builds():
    model = DetectionModel(slimneck_v5("VoVGSCSP", 0.33, 0.25))
    assert count_params(model) == 1_669_693
    assert count_params(model) + sum(d["extra_params"] for d in model.reference_differences()) == 1_900_669
    assert all(type(model.model[i]) is VoVGSCSPV5 for i in (13, 17, 20, 23))
    assert type(model.model[10]) is GSConvV5 and not model.unused_rows()


def test_the_yolov5_port_gsconv_orders_even_channels_first():
    m = GSConvV5(8, 12, 3, 1).eval()
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        dense = m.cv1(x)
        both = torch.cat((dense, m.cv2(dense)), 1)
        y = m(x)
    # the port's reshape(b * c / 2, 2, hw) -> permute -> split: [channels 0, 2, 4, ... | channels 1, 3, 5, ...]
    reference = both.reshape(2 * 6, 2, 81).permute(1, 0, 2).reshape(2, -1, 6, 9, 9)
    assert torch.equal(y, torch.cat((reference[0], reference[1]), 1))


def test_the_authors_yolov8_sn_builds_the_yolov8_port_blocks_and_flags_the_dead_row():
    with pytest.warns(UserWarning, match=r"row 22 VoVGSCSP \(363,840 params\) feeds nothing"):
        model = DetectionModel(yolov8_sn())
    assert model.layout[0] == "ultralytics"
    assert type(model.model[15]) is VoVGSCSPV8 and len(model.model[15].m.m) == 1  # n = 3 x 0.33
    assert [r.index for r in model.unused_rows()] == [22]


def test_yolov8_port_vovgscsp_honours_n_and_its_c_variant_builds_no_dead_block():
    assert [len(VoVGSCSPV8(32, 64, n).m.m) for n in (1, 2, 3)] == [1, 2, 3]
    cheap = VoVGSCSPCV8(32, 64)
    assert count_params(cheap) == count_params(VoVGSCSPV8(32, 64)) and not hasattr(cheap, "gsb")
    assert cheap.reference_extra_params()[0] > 0


def test_shipped_slimneck_configs_keep_yololabs_blocks():
    for name in ("yolov8n-slimneck.yaml", "yolov5n-slimneck.yaml", "yolov5n-anchor-slimneck.yaml"):
        model = DetectionModel(name)
        assert model.layout[0] == "yololab"
        blocks = [m for m in model.modules() if isinstance(m, (VoVGSCSP, VoVGSCSPV8))]
        assert blocks and all(type(m) in (VoVGSCSP, VoVGSCSPC) for m in blocks)


def test_public_signatures_take_the_ports_positional_rows():
    assert type(VoVGSCSP(16, 32, 2, False, 1, 0.5).gsb[1]) is GSBottleneck  # (c1, c2, n, shortcut, g, e)
    assert VoVGSCSPC(16, 32, 1, False).cv1.conv.out_channels == 16
    assert GSConv(16, 32, 3, 2, 2).cv1.conv.groups == 2  # (c1, c2, k, s, g, act)
    with pytest.raises(ValueError, match="s must be 1"):
        GSBottleneck(16, 16, 3, 2)


@pytest.mark.parametrize("cfg", [slimneck_v5("VoVGSCSPC", 0.33, 0.25), yolov8_sn()], ids=["SNc-v5", "v8-sn"])
def test_port_variants_fuse_and_export(cfg, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # yolov8-sn's dead row (tested above)
        model = DetectionModel(cfg)
    assert_fuses_and_exports(model, tmp_path, imgsz=64)


@pytest.mark.parametrize(("block", "n", "difference"), [(VoVGSCSPCV5, 1, 36_992), (VoVGSCSPCV5, 3, 13_344),
                                                      (VoVGSCSPV5, 3, 36_992), (VoVGSCSPV8, 1, 0),
                                                      (VoVGSCSPV8, 3, -41_216), (VoVGSCSPCV8, 1, 12_336),
                                                      (VoVGSCSPCV8, 3, -28_880)])
def test_reference_differences_count_the_ports_dead_layers_and_ignored_repeats(block, n, difference):
    """The authors' code's parameter count minus ours for (c1, c2) = (64, 128); the values were read from their code
    (run locally): dead 'res' / 'gsb' layers, one bottleneck built whatever n is."""
    assert block(64, 128, n).reference_extra_params()[0] == difference
