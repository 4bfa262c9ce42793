"""Run health: the validation-collapse rule against the recorded BCCD ablation curves, and the per-epoch signals."""

from __future__ import annotations

import csv

import pytest

from conftest import ROOT
from yololab.health import CollapseEvent, collapse_events

RUNS = ROOT / "benchmarks" / "ablation-bccd" / "runs"
# (run, first collapsed epoch) of every collapse that issue #24 lists: epoch "12 -> 13" is epoch 13
ISSUE_COLLAPSES = {
    "yolov8n-spconv-seed0": [15], "yolov8n-spconv-seed1": [18], "yolov8n-spconv-seed2": [13, 22],
    "yolov8n-revcol-seed0": [5, 8], "yolov8n-revcol-seed1": [6, 12], "yolov8n-revcol-seed2": [4],
}
HEALTHY = [f"yolov8n{variant}-seed{seed}" for variant in ("", "-slimneck", "-repvit", "-elan") for seed in range(3)]


def read_rows(run: str) -> list[dict]:
    with open(RUNS / run / "results.csv", newline="") as f:
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
