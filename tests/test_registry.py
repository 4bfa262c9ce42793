"""Registry, YAML errors and user plug-ins."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from yololab import register
from yololab.cli import main
from yololab.nn import DetectionModel, FeatureInfo, ModelConfigError
from yololab.nn.conv import Conv
from yololab.nn.repvit import RepViT
from yololab.nn.revcol import RevCol
from yololab.nn.timm_backbone import TimmBackbone
from yololab.plugins import PluginError, load_plugins

TINY = {
    "nc": 2,
    "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]]],
    "head": [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [[2, 3, 4], 1, "Detect", ["nc"]]],
}


def _with_row(index: int, row: list) -> dict:
    cfg = {k: (list(v) if isinstance(v, list) else v) for k, v in TINY.items()}
    rows = cfg["backbone"] + cfg["head"]
    rows[index] = row
    return {"nc": 2, "backbone": rows[:3], "head": rows[3:]}


def test_tiny_model_builds():
    model = DetectionModel(TINY)
    assert model.stride.tolist() == [8, 16, 32]


def test_unknown_module_suggests_and_explains():
    with pytest.raises(ModelConfigError, match=r"row 1 .*unknown module 'Cnv'.*'Conv'.*register"):
        DetectionModel(_with_row(1, [-1, 1, "Cnv", [32, 3, 2]]))


def test_bad_from_index_names_the_row():
    with pytest.raises(ModelConfigError, match=r"row 2 .*'from' index 7"):
        DetectionModel(_with_row(2, [7, 1, "Conv", [32, 3, 2]]))


def test_wrong_arg_count():
    with pytest.raises(ModelConfigError, match=r"row 1 .*wrong arguments"):
        DetectionModel(_with_row(1, [-1, 1, "Conv", [32, 3, 2, None, 1, 1, True, "extra", 5]]))


def test_multi_input_into_single_input_module():
    with pytest.raises(ModelConfigError, match=r"row 3 .*takes one input"):
        DetectionModel(_with_row(3, [[1, 2], 1, "Conv", [32, 3, 2]]))


def test_channel_mismatch_found_at_build_time():
    cfg = {"nc": 2,
           "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [64, 3, 1]]],
           "head": [[[1, 2], 1, "Concat", [2]], [-1, 1, "Conv", [32, 3, 2]], [[2, 3, 4], 1, "Detect", ["nc"]]]}
    with pytest.raises(ModelConfigError, match=r"row 3 \(Concat\): fails on a test input"):
        DetectionModel(cfg)


def test_unsafe_yaml_tag_rejected(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("nc: !!python/object/apply:os.system ['echo hacked']\nbackbone: []\nhead: []\n")
    with pytest.raises(ModelConfigError, match="unsafe or unknown YAML tag"):
        DetectionModel(str(bad))


def test_missing_model_file_lists_shipped_configs():
    with pytest.raises(FileNotFoundError, match="yolov8.yaml"):
        DetectionModel("nope.yaml")


def test_plugin_module_from_separate_file(tmp_path):
    plugin = tmp_path / "my_modules.py"
    plugin.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        import yololab
        from yololab.nn.conv import Conv

        @yololab.register
        class DoubleConv(nn.Module):
            '''Two 3x3 convs (a user's plug-in).'''
            def __init__(self, c1, c2, s=1):
                super().__init__()
                self.a, self.b = Conv(c1, c2, 3, s), Conv(c2, c2, 3)
            def forward(self, x):
                return self.b(self.a(x))
    """))
    cfg = yaml_file = tmp_path / "custom.yaml"
    yaml_file.write_text(textwrap.dedent("""
        nc: 2
        backbone:
          - [-1, 1, Conv, [16, 3, 2]]
          - [-1, 1, DoubleConv, [32, 2]]
          - [-1, 1, DoubleConv, [32, 2]]
        head:
          - [-1, 1, Conv, [32, 3, 2]]
          - [-1, 1, Conv, [32, 3, 2]]
          - [[2, 3, 4], 1, Detect, [nc]]
    """))
    load_plugins(str(plugin))
    model = DetectionModel(str(cfg))
    assert model.model[1].type == "DoubleConv"
    assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 6, 8 * 8 + 4 * 4 + 2 * 2)
    assert main(["info", f"model={cfg}", f"plugins={plugin}", "imgsz=64", "json=true"]) == 0


def test_plugin_error_reports_file_and_line(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("import torch\n\nx = undefined_name + 1\n")
    with pytest.raises(PluginError, match=r"broken.py line 3: NameError"):
        load_plugins(plugin)
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def f(:\n    pass\n")
    with pytest.raises(PluginError, match=r"syntax.py line 1: SyntaxError"):
        load_plugins(syntax)


def test_register_refuses_silent_override():
    from torch import nn

    with pytest.raises(ValueError, match="already registered"):
        @register("Conv")
        class Other(nn.Module):
            pass


BACKBONES = {
    "RevCol": lambda: RevCol(3, [8, 16, 24, 32], [1, 1, 1, 1], columns=2),
    "RepViT": lambda: RepViT(3, "m0_9", width=0.5),
    "TimmBackbone": lambda: TimmBackbone(3, "mobilenetv3_small_050", [2, 3, 4]),
}


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_feature_info_matches_its_outputs(name):
    backbone = BACKBONES[name]().eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        outputs = backbone(x)
    assert [f.channels for f in backbone.feature_info] == [o.shape[1] for o in outputs]
    for f, o in zip(backbone.feature_info, outputs, strict=True):
        assert (x.shape[2] // o.shape[2], x.shape[3] // o.shape[3]) == (f.stride, f.stride)


class TwoLevelBackbone(nn.Module):
    """A user's backbone returning stride-4 and stride-8 maps; only ``feature_info`` declares its channels."""

    def __init__(self, c1: int, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(Conv(c1, width, 3, 2), Conv(width, 2 * width, 3, 2))
        self.down = Conv(2 * width, 4 * width, 3, 2)
        self.feature_info = [FeatureInfo(2 * width, 4), FeatureInfo(4 * width, 8)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p2 = self.stem(x)
        return [p2, self.down(p2)]


class ChannelsOnlyBackbone(TwoLevelBackbone):
    """A mistaken plug-in: ``feature_info`` lists bare channel counts."""

    def __init__(self, c1: int, width: int = 8):
        super().__init__(c1, width)
        self.feature_info = [2 * width, 4 * width]


def test_plugin_backbone_with_only_feature_info_builds():
    register(takes_c1=True, scales_c2=False, replace=True)(TwoLevelBackbone)
    cfg = {"nc": 2,
           "backbone": [[-1, 1, "TwoLevelBackbone", [8]], [0, 1, "Index", [0]], [0, 1, "Index", [1]]],
           "head": [[-1, 1, "Conv", [32, 3, 2]], [[1, 2, 3], 1, "Detect", ["nc"]]]}
    model = DetectionModel(cfg)
    assert model.table[0].channels == [16, 32] and [r.channels for r in model.table[1:4]] == [16, 32, 32]
    assert model.stride.tolist() == [4, 8, 16]
    assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 6, 16 * 16 + 8 * 8 + 4 * 4)

    register(takes_c1=True, scales_c2=False, replace=True)(ChannelsOnlyBackbone)
    cfg["backbone"][0] = [-1, 1, "ChannelsOnlyBackbone", [8]]
    with pytest.raises(ModelConfigError, match=r"row 0 .*ChannelsOnlyBackbone.feature_info must be a non-empty list"):
        DetectionModel(cfg)
