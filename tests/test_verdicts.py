"""`compare`'s verdicts from runs: the image bootstrap joins the seed test when runs kept their predictions."""

import gzip
import json

import numpy as np
import pytest

from synthetic_detections import rescored, synthetic_detection_set
from tiny_training import TINY_MODEL, tiny_dataset, tiny_settings
from yololab.ablation.bootstrap import MatchedStats, load_predictions
from yololab.ablation.command import val_ground_truth
from yololab.ablation.report import format_markdown
from yololab.ablation.sequential import planned_looks, run_sequential
from yololab.ablation.statistics import RunResult, analyse
from yololab.api import YOLO
from yololab.cfg import ConfigError, settings
from yololab.data import load_data_config

MODELS = ["base.yaml", "variant.yaml"]


def _runs(tmp_path, gt, predictions, seeds=3, keep=True):
    results = []
    for seed in range(seeds):
        for k, model in enumerate(MODELS):
            run_predictions = rescored(predictions, seed=10 * seed + k)
            run_dir = tmp_path / f"{model}-{seed}"
            run_dir.mkdir(parents=True)
            if keep:
                (run_dir / "predictions.json.gz").write_bytes(gzip.compress(json.dumps(run_predictions).encode()))
            metrics = {m: float(v[0]) for m, v in MatchedStats(gt, run_predictions).metrics(np.ones(len(gt["images"]))).items()}
            results.append(RunResult(model, seed, True, metrics, run_dir=str(run_dir)))
    return results


@pytest.fixture(scope="module")
def detection_set():
    return synthetic_detection_set(seed=5, images=16, detections=40)


def test_kept_predictions_add_the_seeds_x_images_bootstrap(tmp_path, detection_set):
    gt, predictions = detection_set
    results = _runs(tmp_path, gt, predictions)
    summary = analyse(results, MODELS, {}, ground_truth=gt, resamples=300, margin=1.0)
    assert summary["settings"]["bootstrap"] == "seeds x images, 300 draws"
    d = summary["models"]["variant"]["vs_baseline"]["map"]
    boot = d["bootstrap"]
    assert boot["draws"] == 300 and boot["low"] < d["mean"] < boot["high"]
    assert d["p_difference"] >= boot["p_difference"] and d["p_equivalence"] >= boot["p_equivalence"]
    assert d["conclusion"] in ("inconclusive", "equivalent")  # the same detector rescored: never a difference
    assert "95% interval, seeds x images" in format_markdown(summary, {}, results)


def test_runs_without_predictions_keep_the_seed_interval_and_say_why(tmp_path, detection_set):
    gt, predictions = detection_set
    results = _runs(tmp_path, gt, predictions, keep=False)
    summary = analyse(results, MODELS, {}, ground_truth=gt, resamples=300)
    assert "needs per-image predictions" in summary["settings"]["bootstrap"]
    d = summary["models"]["variant"]["vs_baseline"]["map"]
    assert d["bootstrap"] is None and d["conclusion"] in ("better", "worse", "equivalent", "inconclusive")
    md = format_markdown(summary, {}, results)
    assert "Image bootstrap: needs per-image predictions" in md and "- variant: " in md
    other_split = {**gt, "images": gt["images"][:-1],
                   "annotations": [a for a in gt["annotations"] if a["image_id"] != gt["images"][-1]["id"]]}
    kept = _runs(tmp_path / "kept", gt, predictions, seeds=2)
    note = analyse(kept, MODELS, {}, ground_truth=other_split, resamples=50)["settings"]["bootstrap"]
    assert "these runs have none (base.yaml-0: " in note and "not in the ground truth images" in note


def test_the_sentence_says_how_many_seeds_would_settle_it():
    results = [RunResult(m, s, True, {"map": 0.40 + 0.01 * s + (0.004 + 0.006 * (s % 2) if k else 0)})
               for s in range(3) for k, m in enumerate(MODELS)]
    summary = analyse(results, MODELS, {}, margin=1.0)
    d = summary["models"]["variant"]["vs_baseline"]["map"]
    md = format_markdown(summary, {}, results)
    assert d["conclusion"] == "inconclusive" and d["seeds_needed"] > 3
    assert f"- variant: inconclusive: ~{d['seeds_needed']} seeds would detect a 1.0-point difference" in md
    assert "| 90% interval |" in md
    sequential = format_markdown(analyse(results, MODELS, {}, looks=4), {}, results)
    assert "runs at 0.0125 (5% over 4 planned looks" in sequential and "| 97.5% interval |" in sequential


def test_seeds_auto_stops_at_the_budget_and_needs_three_seeds():
    trained = []

    def train(models, seeds):
        trained.append((len(models), list(seeds)))
        return [RunResult(m, s, True, {"map": 0.4 + 0.01 * s + 0.03 * k * (s % 2)})
                for s in seeds for k, m in enumerate(models)]

    def look(results, looks):
        return analyse(results, MODELS, {}, looks=looks)

    lines = []
    _, summary, used = run_sequential(MODELS, 6, train, look, primary="map", budget_s=0.0, log=lines.append)
    assert trained == [(2, [0, 1, 2])] and used == {"variant": 3}  # the first round only
    assert summary["settings"]["looks"] == 4 and "budget_hours reached after 3 seeds" in lines[-1]
    _, _, used = run_sequential(MODELS, 6, train, look, primary="map", log=lambda m: None)
    assert used == {"variant": 6} and trained[-1] == (2, [5])  # never settled: every planned seed
    with pytest.raises(ValueError, match="max_seeds >= 3"):
        planned_looks(2)


def test_compare_settings_take_auto_seeds_and_the_verdict_keys():
    s = settings("compare", {"seeds": "AUTO", "margin": 0.5, "primary": "aps", "max_seeds": 8, "budget_hours": 2})
    assert (s.seeds, s.margin, s.primary, s.max_seeds, s.budget_hours) == ("auto", 0.5, "aps", 8, 2.0)
    assert settings("compare", {"seeds": 5}).seeds == 5
    for bad, message in (({"seeds": 0}, "an integer >= 1 or auto"), ({"seeds": "many"}, "an integer >= 1 or auto"),
                         ({"primary": "ap"}, "primary must be map, map50"), ({"max_seeds": 2}, "max_seeds=2")):
        with pytest.raises(ConfigError, match=message):
            settings("compare", bad)


def test_a_trained_runs_kept_predictions_fit_the_val_ground_truth_that_compare_builds(tmp_path):
    data_yaml = tiny_dataset(tmp_path / "data")
    result = YOLO(TINY_MODEL).train(**tiny_settings(data_yaml, tmp_path))
    gt = val_ground_truth(load_data_config(str(data_yaml)))
    predictions = load_predictions(result["save_dir"])
    # the same image ids on both sides (a 2-epoch model detects something, if badly, on every val image)
    assert {p["image_id"] for p in predictions} == {im["id"] for im in gt["images"]}
    matched = MatchedStats(gt, predictions)
    assert matched.metrics(np.ones(matched.n_images))["map"][0] == pytest.approx(result["map"], abs=1e-6)
