"""Run health: the validation-collapse rule against the recorded BCCD ablation curves, and the per-epoch signals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from conftest import ABLATION_RUNS, FIRST_ABLATION_RUNS
from tiny_training import TINY_MODEL
from yololab.checkpoint import load_checkpoint
from yololab.data import YoloDataset, load_data_config, make_synthetic
from yololab.health import (
    CollapseEvent,
    RunHealth,
    batchnorm_drift,
    batchnorm_variance_range,
    collapse_events,
    collapse_rule,
    ema_disagreement,
    nonfinite_gradients,
    sample_images,
)
from yololab.nn import DetectionModel
from yololab.utils.torch_utils import ModelEMA

# (run, first collapsed epoch) of every collapse that issue #24 lists: epoch "12 -> 13" is epoch 13
ISSUE_COLLAPSES = {
    "yolov8n-spconv-seed0": [15], "yolov8n-spconv-seed1": [18], "yolov8n-spconv-seed2": [13, 22],
    "yolov8n-revcol-seed0": [5, 8], "yolov8n-revcol-seed1": [6, 12], "yolov8n-revcol-seed2": [4],
}
HEALTHY = [f"yolov8n{variant}-seed{seed}" for variant in ("", "-slimneck", "-repvit", "-elan") for seed in range(3)]
RERUN = [f"yolov8n{variant}-seed{seed}" for variant in ("", "-slimneck", "-spconv", "-repvit", "-revcol", "-elan")
         for seed in range(3)]


def read_rows(run: str, runs: Path = FIRST_ABLATION_RUNS) -> list[dict]:
    with open(runs / run / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def curve(scores: list[float], losses: list[float] | None = None) -> list[dict]:
    """results.csv rows with the given mAP50-95 per epoch and a training loss falling by 2% per epoch."""
    losses = losses or [6.0 * 0.98 ** i for i in range(len(scores))]
    return [{"epoch": str(i + 1), "train/box_loss": str(loss / 3), "train/cls_loss": str(loss / 3),
             "train/dfl_loss": str(loss / 3), "metrics/mAP50-95": str(score)}
            for i, (score, loss) in enumerate(zip(scores, losses))]


@pytest.mark.parametrize("run", sorted(ISSUE_COLLAPSES))
def test_rule_flags_every_recorded_spconv_and_revcol_collapse(run):
    assert [e.epoch for e in collapse_events(read_rows(run))] == ISSUE_COLLAPSES[run]


@pytest.mark.parametrize("run", HEALTHY)
def test_rule_flags_none_of_the_recorded_healthy_runs(run):
    rows = read_rows(run)
    assert len(rows) == 30
    assert collapse_events(rows) == []


@pytest.mark.parametrize("run", RERUN)
def test_no_run_of_the_ablation_rerun_after_the_fix_collapses_or_has_nonfinite_gradients(run):
    """The fix's evidence: all 18 re-run runs, SPConv and RevCol included, train 30 healthy epochs."""
    rows = read_rows(run, ABLATION_RUNS)
    assert len(rows) == 30
    assert collapse_events(rows) == []
    health = json.loads((ABLATION_RUNS / run / "health.json").read_text())
    assert health["collapses"] == []
    assert [e["nonfinite_grad_steps"] for e in health["epochs"]] == [0] * 30


def test_collapsed_epochs_in_a_row_are_one_event_with_its_peak_and_low():
    events = collapse_events(curve([0.0, 0.05, 0.1, 0.2, 0.3, 0.02, 0.1, 0.32, 0.1, 0.35]))
    assert events == [CollapseEvent(6, 7, 0.3, 0.02, pytest.approx(0.98)),
                      CollapseEvent(9, 9, 0.32, 0.1, pytest.approx(0.98))]
    assert events[0].describe() == "epochs 6-7: mAP50-95 0.020 after a best of 0.300"


@pytest.mark.parametrize("scores, losses, why", [
    ([0.0, 0.2, 0.02, 0.3], None, "within the first 3 epochs"),
    ([0.0, 0.01, 0.04, 0.01, 0.1], None, "peak below 0.05"),
    ([0.1, 0.2, 0.3, 0.16, 0.4], None, "drop to 0.53 of the best"),
    ([0.1, 0.2, 0.3, 0.1, 0.4], [6.0, 5.0, 4.0, 4.5, 4.0], "training loss rose by 12.5%"),
])
def test_drops_that_are_not_collapses(scores, losses, why):
    assert collapse_events(curve(scores, losses)) == [], why


def test_rows_without_validation_are_ignored_and_missing_columns_are_named():
    rows = curve([0.1, 0.2, 0.3, 0.3, 0.01])
    rows[3]["metrics/mAP50-95"] = ""
    assert [e.epoch for e in collapse_events(rows)] == [5]
    del rows[4]["train/cls_loss"]
    with pytest.raises(KeyError, match="train/cls_loss"):
        collapse_events(rows)


def tiny_detector() -> DetectionModel:
    return DetectionModel(TINY_MODEL).eval()


def test_batchnorm_drift_is_about_one_for_fresh_statistics_and_large_for_stale_ones():
    torch.manual_seed(0)
    model, images = tiny_detector(), torch.rand(4, 3, 64, 64)
    for m in model.modules():  # running statistics = these images' statistics, as after a long stable training
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()(images)
    fresh, _ = batchnorm_drift(model, images)
    assert model.training and 0.5 < fresh < 2.0  # the mode is restored
    with torch.no_grad():  # the weights move after the last train-mode forward: the statistics are stale
        model.model[1].conv.weight.mul_(10)
    stale, layer = batchnorm_drift(model, images)
    assert stale > 50 and layer in {name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def test_batchnorm_signals_are_none_without_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert batchnorm_variance_range(model) is None and batchnorm_drift(model, torch.rand(1, 3, 8, 8)) is None


def test_batchnorm_variance_range_covers_every_channel():
    model = tiny_detector()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    norms[0].running_var[3], norms[-1].running_var[0] = 1e-4, 50.0
    assert batchnorm_variance_range(model) == (pytest.approx(1e-4), 50.0)


def test_ema_disagreement_is_zero_for_a_copy_and_the_trained_model_keeps_its_mode():
    torch.manual_seed(0)
    model, images = tiny_detector().train(), torch.rand(2, 3, 64, 64)
    ema = ModelEMA(model)
    assert ema_disagreement(model, ema.ema, images) == 0.0 and model.training
    with torch.no_grad():
        model.model[-1].cv3[0][-1].bias.add_(10.0)  # class scores of level 0 from about 2e-4 to 0.8
    assert 0.5 < ema_disagreement(model, ema.ema, images) <= 1.0


def test_nonfinite_gradients_counts_parameters():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    assert nonfinite_gradients(model) == 0  # no gradients yet
    model(torch.ones(1, 2)).sum().backward()
    assert nonfinite_gradients(model) == 0
    model[0].weight.grad[0, 0] = float("nan")
    model[1].bias.grad[0] = float("inf")
    assert nonfinite_gradients(model) == 2


def test_run_health_writes_health_json_and_warns_once_per_new_collapse(tmp_path):
    torch.manual_seed(0)
    model, images = tiny_detector().train(), torch.rand(2, 3, 64, 64)
    ema = ModelEMA(model)
    health = RunHealth(tmp_path, (images * 255).byte())
    rows = curve([0.1, 0.2, 0.3, 0.35, 0.05, 0.1])  # one collapse over epochs 5-6, warned once
    warnings = []
    for row in rows:
        with open(tmp_path / "results.csv", "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if row["epoch"] == "1":
                writer.writeheader()
            writer.writerow(row)
        model(images)[0].sum().backward()
        if row["epoch"] == "2":
            next(model.parameters()).grad.view(-1)[0] = float("nan")
        health.check_gradients(model)
        model.zero_grad()
        warnings.append(health.end_epoch(int(row["epoch"]), model, ema.ema))
    collapse = ("health: validation collapse at epoch 5: mAP50-95 0.050 after a best of 0.350 (training loss -2.0% on "
                "the epoch before): check BatchNorm statistics and EMA in health.json")
    assert warnings[4] == [collapse]
    assert warnings[1] == ["health: 1 optimizer steps had non-finite gradients"]
    assert [w for i, w in enumerate(warnings) if i not in (1, 4)] == [[]] * 4
    record = json.loads((tmp_path / "health.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3, 4, 5, 6]
    assert [e["nonfinite_grad_steps"] for e in record["epochs"]] == [0, 1, 0, 0, 0, 0]
    assert record["collapses"] == [{"epoch": 5, "last_epoch": 6, "peak": 0.35, "low": 0.05,
                                    "loss_ratio": pytest.approx(0.98)}]
    assert record["rule"] == collapse_rule()
    first = record["epochs"][0]
    assert first["bn_var_min"] <= first["bn_var_max"] and first["bn_drift"] > 0 and first["ema_score_gap"] >= 0
    resumed = RunHealth(tmp_path, images, start_epoch=3)  # a resume from epoch 3 redoes epochs 4-6
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3]


def test_sample_images_takes_the_first_images_of_one_shape(tmp_path):
    data = load_data_config(make_synthetic(tmp_path, n_train=2, n_val=5, imgsz=96, seed=0))
    images = sample_images(YoloDataset(data.val, imgsz=64, rect=True, batch_size=4, stride=32, nc=data.nc), n=3)
    assert images.shape[:2] == (3, 3) and images.dtype == torch.uint8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch tiny training run: (trainer, data.yaml)."""
    from tiny_training import tiny_dataset, tiny_settings
    from yololab.engine.trainer import Trainer

    root = tmp_path_factory.mktemp("health_run")
    data = tiny_dataset(root / "data")
    trainer = Trainer(tiny_settings(data, root), model=DetectionModel(TINY_MODEL))
    trainer.train()
    return trainer, data


def test_training_records_health_per_epoch(trained):
    trainer, _ = trained
    record = json.loads((trainer.save_dir / "health.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert all(e["nonfinite_grad_steps"] == 0 and e["bn_drift"] > 0 and 0 <= e["ema_score_gap"] <= 1
               for e in record["epochs"])
    assert record["collapses"] == [] and record["rule"] == collapse_rule()


def test_validated_model_carries_the_batchnorm_statistics_of_its_own_weights(trained):
    """Issue #24: validation normalized with running averages that lag the weights (momentum 0.03 over ~8 optimizer
    steps), which collapsed eval-mode mAP of SPConv and RevCol for whole epochs. The validated (EMA) weights must
    carry statistics re-estimated for exactly those weights on the calibration images."""
    trainer, _ = trained
    model = DetectionModel(TINY_MODEL)
    model.load_state_dict(load_checkpoint(trainer.wdir / "last.pt")["model"])
    stored = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    update_bn(trainer._calibration_batches(trainer.epoch), model)
    for name, value in stored.items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-3, atol=1e-4)  # channels-last round-off


@pytest.mark.parametrize("cfg", ["yolov8n-spconv.yaml", "yolov8n-revcol.yaml"])
def test_every_batchnorm_updates_once_per_training_step(cfg):
    """Rules out the suspects of issue #24 other than stale statistics: no BatchNorm of the split SPConv paths or of
    the reversible RevCol recomputation is updated twice or never in a training step."""
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=3).train()
    sum(f.sum() for f in model(torch.rand(2, 3, 64, 64))).backward()
    counts = {int(m.num_batches_tracked) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert counts == {1}
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.03}
