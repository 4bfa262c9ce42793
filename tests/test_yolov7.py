"""YOLOv7 as published: its training layouts build with the official parameter counts, activation calls are read
from an allow-list, the YOLOv7 modules keep their equivalence claims (RepConv fuse, IDetect fold, ReOrg layout,
E-ELAN as a Shortcut of two ELANs), the fused models export, and the dead-row lint."""

from __future__ import annotations

import copy
import csv
import json
import warnings

import pytest
import torch
import yaml
from torch import nn

import yolov7_layouts as layouts
from model_checks import assert_fuses_and_exports, randomize_batchnorms
from tiny_training import tiny_dataset, tiny_settings
from yololab.anchor_loss import AnchorDetectionLoss, match_anchors, ota_assign
from yololab.cfg import command_keys
from yololab.cfg.recipe import load_recipe, recipe_name
from yololab.cli import main
from yololab.engine.trainer import Trainer
from yololab.nn import DetectionModel, ModelConfigError, load_model_yaml
from yololab.nn.anchor_head import IAuxDetect, IDetect
from yololab.nn.detector import describe_unused
from yololab.nn.elan import DownC, EELANSum, ReOrg, RepConv
from yololab.nn.parse import MODELS_DIR, build_layers, model_layout, parse_activation, unused_rows
from yololab.utils.profile import count_params

OFFICIAL_PARAMS = {"yolov7_tiny": 6_228_762, "yolov7": 37_622_682, "yolov7x": 71_347_394, "yolov7_w6": 82_312_436,
                   "yolov7_e6e": 166_408_884}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_official_layouts_build_the_official_parameter_count(name):
    cfg = getattr(layouts, name)()
    model = DetectionModel(cfg)
    assert count_params(model) == OFFICIAL_PARAMS[name]
    p6 = name in ("yolov7_w6", "yolov7_e6e")
    assert model.layout[0] == "yolov7" and model.stride.tolist() == [8.0, 16.0, 32.0, 64.0][:4 if p6 else 3]
    assert isinstance(model.head, IAuxDetect if p6 else IDetect) and not model.unused_rows()


@pytest.mark.parametrize(("name", "params"), [("yolov7_e6", 111_898_292), ("yolov7_d6", 154_709_364)])
def test_the_other_p6_layouts_build(name, params):
    """Counts of the official code, run locally (docs/compatibility.md)."""
    model = DetectionModel(getattr(layouts, name)())
    assert isinstance(model.head, IAuxDetect) and model.head.nl == 4 and len(model.head.m2) == 4
    assert count_params(model) == params


def test_iauxdetect_infers_and_exports_with_the_lead_head_only():
    model = DetectionModel(layouts.yolov7_w6()).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 128, 128))
    assert y.shape == (1, 84, 3 * sum((128 // s) ** 2 for s in (8, 16, 32, 64)))
    model.fuse()
    assert model.head.m2 is None and model.head.ia is None


def test_yolov7_tiny_conv_rows_take_padding_groups_and_the_activation():
    model = DetectionModel(layouts.yolov7_tiny())
    first = model.model[0]
    assert first.conv.kernel_size == (3, 3) and first.conv.stride == (2, 2) and first.conv.padding == (1, 1)
    assert first.conv.dilation == (1, 1) and isinstance(first.act, nn.LeakyReLU) and first.act.negative_slope == 0.1
    assert all(not isinstance(m, nn.SiLU) for m in model.model[:-1].modules())


def test_layout_is_chosen_by_the_file_and_can_be_set():
    assert model_layout(layouts.yolov7())[0] == "yolov7"
    assert model_layout(load_model_yaml("yolov5-anchor.yaml"))[0] == "ultralytics"  # scales: yololab's own
    assert model_layout(load_model_yaml("yolov7-af.yaml"))[0] == "ultralytics"  # no anchors
    v5_file = {k: v for k, v in load_model_yaml("yolov5-anchor.yaml").items() if k != "scales"}
    assert model_layout(v5_file)[0] == "yolov5"
    assert model_layout({**v5_file, "layout": "yolov7"}) == ("yolov7", "set by the file's 'layout:' key")
    with pytest.raises(ModelConfigError, match="layout must be one of"):
        model_layout({**v5_file, "layout": "yolov9"})
    # the same Conv row means another dilation / activation in the two repositories' files
    row = [[-1, 1, "Conv", [8, 3, 1, None, 1, 2]], [-1, 1, "Conv", [8, 1, 1]]]
    v5 = DetectionModel({**v5_file, "backbone": row, "head": [[-1, 1, "Detect", ["nc", "anchors"]]],
                         "anchors": [[10, 13, 16, 30]]})
    assert v5.model[0].conv.dilation == (2, 2)


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("nn.LeakyReLU(0.1)", nn.LeakyReLU, 0.1), ("nn.SiLU()", nn.SiLU, None), ("nn.ReLU()", nn.ReLU, None),
    ("nn.Hardswish()", nn.Hardswish, None), ("nn.Identity()", nn.Identity, None),
    ("nn.LeakyReLU(negative_slope=-0.2)", nn.LeakyReLU, -0.2)])
def test_allowed_activations_are_parsed(text, kind, value):
    act = parse_activation(text)
    assert type(act) is kind
    if value is not None:
        assert act.negative_slope == value


@pytest.mark.parametrize("text", [
    "nn.GELU()", "nn.LeakyReLU(slope)", "nn.LeakyReLU(0.1 + 0.1)", "nn.LeakyReLU('0.1')",
    "__import__('os').system('true')", "torch.nn.SiLU()", "nn.SiLU()()", "nn.LeakyReLU(**{'a': 1})",
    "nn.LeakyReLU(0.1, 2, 3)"])
def test_anything_outside_the_allow_list_is_refused(text):
    with pytest.raises(ModelConfigError, match="not an allowed activation"):
        parse_activation(text)


def test_a_refused_activation_names_the_file_and_row():
    cfg = layouts.yolov7_tiny()
    cfg["backbone"][1] = [-1, 1, "Conv", [64, 3, 2, None, 1, "nn.Sigmoid()"]]
    with pytest.raises(ModelConfigError, match=r"row 1 .*'nn.Sigmoid\(\)' is not an allowed activation"):
        DetectionModel(cfg)


def test_a_scale_letter_on_a_file_without_scales_is_an_error():
    with pytest.raises(ModelConfigError, match="has no 'scales'"):
        load_model_yaml("yolov7x-af.yaml")
    with pytest.raises(FileNotFoundError):
        load_model_yaml("yolov7x.yaml")  # not silently yolov7-af.yaml


@pytest.mark.parametrize("conv", [RepConv(8, 8), RepConv(8, 16, 3, 2), RepConv(8, 8, 3, 1, None, 2),
                                  RepConv(8, 8, 5, act=nn.LeakyReLU(0.1))])
def test_repconv_fuses_into_one_conv_exactly(conv):
    conv = randomize_batchnorms(conv).eval()
    x = torch.randn(2, 8, 13, 11)
    with torch.no_grad():
        y = conv(x)
        conv.fuse()
        y_fused = conv(x)
    assert conv.rbr_reparam is not None and not hasattr(conv, "rbr_dense")
    assert (y - y_fused).abs().max() <= 1e-5 * y.abs().max()


def test_idetect_folds_its_implicit_knowledge_into_the_conv():
    model = DetectionModel(layouts.yolov7_tiny()).eval()
    head = model.head
    for p in (*head.ia.parameters(), *head.im.parameters()):
        p.data.normal_(1.0, 0.5)  # far from the initial values, so the fold is really tested
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        y = model(x)
        head.fuse()
        y_fused = model(x)
    assert head.ia is None and head.im is None
    assert (y - y_fused).abs().max() <= 1e-5 * y.abs().max()


def test_reorg_is_space_to_depth_in_yolov7_order():
    x = torch.randn(2, 3, 8, 6)
    y = ReOrg()(x)
    assert y.shape == (2, 12, 4, 3)
    unshuffled = nn.functional.pixel_unshuffle(x, 2).view(2, 3, 2, 2, 4, 3)  # channel c * 4 + row * 2 + col
    expected = unshuffled.permute(0, 3, 2, 1, 4, 5).reshape(2, 12, 4, 3)  # blocks (col, row) outer, c inner
    assert torch.equal(y, expected)


def test_downc_halves_the_size_and_splits_the_width():
    assert DownC(8, 16)(torch.randn(1, 8, 10, 10)).shape == (1, 16, 5, 5)


def test_e_elan_is_a_shortcut_of_two_elans_on_the_same_input():
    """YOLOv7-E6E's rows (two ELANs of three 2-conv blocks on one input, then Shortcut) compute EELANSum."""
    def elan(source: int) -> list:
        return [[source, 1, "Conv", [8, 1, 1]], [source - 1, 1, "Conv", [8, 1, 1]],
                *([[-1, 1, "Conv", [8, 3, 1]]] * 6), [[-1, -3, -5, -7, -8], 1, "Concat", [1]],
                [-1, 1, "Conv", [16, 1, 1]]]
    rows = [[-1, 1, "Conv", [16, 3, 1]], *elan(-1), *elan(-11), [[-1, -11], 1, "Shortcut", [1]]]
    cfg = {"nc": 1, "anchors": [[10, 13]], "backbone": rows, "head": [[-1, 1, "IDetect", ["nc", "anchors"]]]}
    model = randomize_batchnorms(DetectionModel(cfg)).eval()
    ours = EELANSum(16, 16, 8, 3, 2, 2).eval()
    rows_layers = [m for m in model.model[1:-2].modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    our_layers = [m for m in ours.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    for src, dst in zip(rows_layers, our_layers, strict=True):
        dst.load_state_dict(src.state_dict())
        if isinstance(dst, nn.BatchNorm2d):
            dst.eps = src.eps  # the detector's BatchNorm eps (1e-3)
    seen = {}
    model.model[0].register_forward_hook(lambda m, i, o: seen.update(stem=o))
    model.model[21].register_forward_hook(lambda m, i, o: seen.update(shortcut=o))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
        assert torch.allclose(seen["shortcut"], ours(seen["stem"]), atol=1e-5)


@pytest.mark.parametrize("name", ["yolov7_tiny", "yolov7"])
def test_fused_official_layouts_export_to_onnx(name, tmp_path):
    model = DetectionModel(getattr(layouts, name)())
    _, fused, _ = assert_fuses_and_exports(model, tmp_path, imgsz=64)
    assert not any(isinstance(m, RepConv) and m.rbr_reparam is None for m in fused.modules())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_every_official_layout_fuses_and_exports(name, tmp_path):
    model = DetectionModel(getattr(layouts, name)())
    assert_fuses_and_exports(model, tmp_path, imgsz=128)


def test_dead_rows_are_listed_with_index_module_and_params(tmp_path):
    cfg = load_model_yaml("yolov8n.yaml")
    cfg["head"] = copy.deepcopy(cfg["head"])
    cfg["head"].insert(len(cfg["head"]) - 1, [-1, 1, "C2f", [256]])  # after the last C2f, before Detect
    file = tmp_path / "dead.yaml"
    file.write_text(yaml.safe_dump(cfg))
    with pytest.warns(UserWarning, match=r"row 22 C2f \([\d,]+ params\) feeds nothing"):
        model = DetectionModel(str(file))
    (dead,) = model.unused_rows()
    assert (dead.index, dead.module) == (22, "C2f") and dead.params == sum(p.numel() for p in model.model[22].parameters())
    assert describe_unused(dead) == f"row 22 C2f ({dead.params:,} params) feeds nothing"


def test_info_lists_the_dead_rows_and_json_carries_them(tmp_path, capsys):
    cfg = load_model_yaml("yolov8n.yaml")
    cfg["head"].insert(len(cfg["head"]) - 1, [-1, 1, "C2f", [256]])
    file = tmp_path / "dead.yaml"
    file.write_text(yaml.safe_dump(cfg))
    with pytest.warns(UserWarning, match="feeds nothing"):
        assert main(["info", f"model={file}", "imgsz=64", "json=true"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert [(r["index"], r["module"]) for r in result["unused_rows"]] == [(22, "C2f")]
    assert result["unused_rows"][0]["params"] > 0 and result["layout"] == "ultralytics"
    with pytest.warns(UserWarning, match="feeds nothing"):
        assert main(["info", f"model={file}", "imgsz=64"]) == 0
    assert "warning: row 22 C2f (" in capsys.readouterr().out


@pytest.mark.parametrize("config", sorted(p.name for p in MODELS_DIR.glob("*.yaml")))
def test_no_shipped_config_has_a_dead_row(config):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a dead row would warn at build time
        cfg = load_model_yaml(config)
        if cfg.get("scales"):
            cfg["scale"] = next(iter(cfg["scales"]))
        _, _, table, _ = build_layers(cfg)
        assert not unused_rows(table)


# YOLOv7's data/hyp.scratch.{tiny,p5,p6}.yaml (the keys with an effect) and its train.py choices outside the file.
HYP_SCRATCH_TINY = {"lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
                    "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "cls": 0.5, "obj": 1.0,
                    "anchor_t": 4.0, "fl_gamma": 0.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0,
                    "translate": 0.1, "scale": 0.5, "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5,
                    "mosaic": 1.0, "mixup": 0.05}
HYP_SCRATCH_P5 = {**HYP_SCRATCH_TINY, "lrf": 0.1, "cls": 0.3, "obj": 0.7, "translate": 0.2, "scale": 0.9,
                  "mixup": 0.15}
HYP_SCRATCH_P6 = {**HYP_SCRATCH_P5, "lrf": 0.2}
YOLOV7_TRAIN_PY = {"optimizer": "SGD", "cos_lr": True, "nbs": 64, "warmup_min_iters": 1000, "close_mosaic": 0,
                   "label_smoothing": 0.0, "autoanchor": True, "loss_ota": True,
                   "iou": 0.6}  # test.py's NMS IoU, which its train.py validates with


@pytest.mark.parametrize(("name", "recipe", "hyp"), [("yolov7_tiny", "yolov7-tiny", HYP_SCRATCH_TINY),
                                                     ("yolov7", "yolov7-p5", HYP_SCRATCH_P5),
                                                     ("yolov7x", "yolov7-p5", HYP_SCRATCH_P5),
                                                     ("yolov7_w6", "yolov7-p6", HYP_SCRATCH_P6),
                                                     ("yolov7_e6e", "yolov7-p6", HYP_SCRATCH_P6)])
def test_yolov7_files_choose_yolov7s_recipe(name, recipe, hyp):
    assert recipe_name(getattr(layouts, name)()) == recipe
    assert load_recipe(recipe) == {**hyp, **YOLOV7_TRAIN_PY}
    assert set(load_recipe(recipe)) <= set(command_keys("train"))


def test_other_files_keep_their_recipe():
    assert recipe_name(load_model_yaml("yolov5-anchor.yaml")) == "yolov5-anchor"
    assert recipe_name(load_model_yaml("yolov7-af.yaml")) is None


def test_yolov7_tiny_official_layout_trains_and_validates(tmp_path):
    """The official-layout yolov7-tiny (IDetect, LeakyReLU rows) trains with its recipe: the loss falls, val runs."""
    data = tiny_dataset(tmp_path / "data", n_train=8, n_val=4, overfit=True)
    model_file = tmp_path / "yolov7-tiny.yaml"
    model_file.write_text(yaml.safe_dump(layouts.yolov7_tiny()))
    trainer = Trainer(tiny_settings(data, tmp_path / "runs", model=str(model_file), epochs=4, imgsz=96,
                                    optimizer="AdamW", lr0=0.002, warmup_epochs=0, nbs=4))
    result = trainer.train()
    assert trainer.args.mixup == 0.05 and trainer.args.cls == 0.5 and trainer.args.autoanchor  # hyp.scratch.tiny
    assert trainer.loss_fn.ota
    with open(trainer.save_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    total = [sum(float(r[k]) for k in ("train/box_loss", "train/cls_loss", "train/obj_loss")) for r in rows]
    assert len(rows) == 4 and total[-1] < total[0]
    assert 0 <= result["map"] <= 1


def _ota_case(seed: int = 0):
    torch.manual_seed(seed)
    model = DetectionModel(layouts.yolov7_tiny(), nc=3)
    feats = [torch.randn(2, 3 * 8, s, s, requires_grad=True) for s in (8, 4, 2)]
    batch = {"batch_idx": torch.tensor([0.0, 0.0, 1.0]), "cls": torch.tensor([0.0, 2.0, 1.0]),
             "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.25], [0.7, 0.6, 0.4, 0.3], [0.5, 0.5, 0.6, 0.5]])}
    return model, feats, batch


def test_ota_assigns_each_candidate_to_at_most_one_target_and_every_target_at_least_one():
    model, feats, batch = _ota_case()
    loss = AnchorDetectionLoss(model, ota=True)
    targets = torch.cat((batch["batch_idx"][:, None], batch["cls"][:, None], batch["bboxes"]), 1)
    preds = [f.view(2, 3, 8, *f.shape[2:]).permute(0, 1, 3, 4, 2) for f in feats]
    matched = [match_anchors(targets, loss.anchors[i], p.shape[2:4]) for i, p in enumerate(preds)]
    chosen = ota_assign(matched, preds, loss.anchors, targets)
    n_matched, n_chosen = sum(len(t.image) for t in matched), sum(len(t.image) for t in chosen)
    assert 0 < n_chosen <= n_matched
    for image, cls in ((0, {0, 2}), (1, {1})):  # every target of every image keeps at least one positive
        assert {int(c) for t in chosen for c in t.cls[t.image == image]} == cls
    for t, pred in zip(chosen, preds):  # each positive carries its own target's class and size (grid units)
        h, w = pred.shape[2:4]
        wanted = {(int(r[0]), int(r[1]), round(float(r[4]) * w, 4), round(float(r[5]) * h, 4)) for r in targets}
        got = {(int(i), int(c), round(float(b[2]), 4), round(float(b[3]), 4)) for i, c, b in zip(t.image, t.cls, t.box)}
        assert got <= wanted


def test_ota_loss_is_finite_differs_from_the_plain_assignment_and_backpropagates():
    model, feats, batch = _ota_case()
    plain, _ = AnchorDetectionLoss(model)(feats, batch)
    total, parts = AnchorDetectionLoss(model, ota=True)(feats, batch)
    assert torch.isfinite(total) and parts.shape == (3,) and not torch.isclose(total, plain)
    total.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_iauxdetect_trains_its_auxiliary_heads_with_the_lead_guided_assignment():
    torch.manual_seed(0)
    model = DetectionModel(layouts.yolov7_w6(), nc=2).train()
    feats = model(torch.rand(2, 3, 128, 128))
    assert len(feats) == 8 and [f.shape[-1] for f in feats] == [16, 8, 4, 2] * 2  # lead maps, then auxiliary maps
    batch = {"batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([0.0, 1.0]),
             "bboxes": torch.tensor([[0.4, 0.4, 0.3, 0.3], [0.6, 0.5, 0.2, 0.4]])}
    total, _ = AnchorDetectionLoss(model, ota=True)(feats, batch)
    total.backward()
    assert all(conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0 for conv in model.head.m2)
    lead_only, _ = AnchorDetectionLoss(model, ota=True)([f.detach() for f in feats[:4]], batch)
    assert lead_only.item() < total.item()  # the auxiliary terms add to the lead loss


def test_auxiliary_candidates_reach_all_four_neighbour_cells():
    targets = torch.tensor([[0.0, 0.0, 0.53, 0.47, 0.1, 0.1]])
    anchors = torch.tensor([[0.8, 0.8]])
    assert len(match_anchors(targets, anchors, (8, 8)).image) == 3  # own cell and the two nearer neighbours
    assert len(match_anchors(targets, anchors, (8, 8), reach=1.0).image) == 5
