"""An interrupted run resumed from last.pt ends exactly like an uninterrupted one (CPU, deterministic)."""

import csv

import pytest
import torch
import yaml

from tiny_training import TINY_MODEL, tiny_dataset, tiny_settings
from yololab.cfg import settings
from yololab.engine.trainer import Trainer, TrainingError, _resume_settings

# Mosaic and the other augmentations stay on so the data RNG state matters too.
RECIPE = {"epochs": 2, "mosaic": 1.0, "close_mosaic": 0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    model_yaml = root / "tiny.yaml"
    model_yaml.write_text(yaml.safe_dump(TINY_MODEL))
    return tiny_dataset(root / "data"), model_yaml


def interrupt_after_first_epoch(trainer: Trainer) -> None:
    if trainer.epoch == 0:
        raise KeyboardInterrupt  # as a Ctrl-C right after epoch 1's checkpoint


def results_without_time(run_dir):
    with open(run_dir / "results.csv") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


def test_interrupted_run_resumes_to_the_same_result(setup, tmp_path):
    data, model_yaml = setup
    Trainer(tiny_settings(data, tmp_path, model=str(model_yaml), name="straight", **RECIPE)).train()

    interrupted = Trainer(tiny_settings(data, tmp_path, model=str(model_yaml), name="cut", **RECIPE),
                          on_epoch_end=[interrupt_after_first_epoch])
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    last = tmp_path / "cut" / "weights" / "last.pt"
    assert torch.load(last, weights_only=True)["meta"]["epoch"] == 1
    # only the keys the user gives replace the checkpoint's, even when they equal the defaults
    assert _resume_settings(settings("train", {"resume": str(last)}))[1]["workers"] == 0
    assert _resume_settings(settings("train", {"resume": str(last), "workers": 2}))[1]["workers"] == 2
    result = Trainer(settings("train", {"resume": str(last), "verbose": False})).train()
    assert result["epochs_run"] == 2

    straight = torch.load(tmp_path / "straight" / "weights" / "last.pt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    assert straight["model"].keys() == resumed["model"].keys()
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    assert results_without_time(tmp_path / "straight") == results_without_time(tmp_path / "cut")


def test_resume_true_picks_the_newest_run_and_finished_runs_refuse(setup, tmp_path):
    data, model_yaml = setup
    with pytest.raises(TrainingError, match="no .*last.pt exists"):
        Trainer(tiny_settings(data, tmp_path, resume=True))
    Trainer(tiny_settings(data, tmp_path, model=str(model_yaml), epochs=1, val=False)).train()
    with pytest.raises(TrainingError, match="no training state: its run finished"):
        Trainer(tiny_settings(data, tmp_path, resume=True))
