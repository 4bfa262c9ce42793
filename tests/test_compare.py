"""`yololab compare`: analysis on stubbed runs, resumability, fault tolerance, and a real tiny comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from yololab.ablation.plots import write_plots
from yololab.ablation.report import write_report
from yololab.ablation.runner import RunResult, run_all
from yololab.ablation.statistics import analyse
from yololab.cli import main

MODELS = ["yolov8n.yaml", "yolov8n-slimneck.yaml"]


def _stub_results(offset: float) -> list[RunResult]:
    base = {0: 0.40, 1: 0.45, 2: 0.38}
    results = []
    for seed, value in base.items():
        for model, delta, epoch_s in ((MODELS[0], 0.0, 10.0 + seed), (MODELS[1], offset, 9.0 + seed)):
            per_class = {"cell": {"ap": value + delta + 0.1}, "platelet": {"ap": value + delta - 0.1}}
            results.append(RunResult(model, seed, True, {"map": value + delta, "map50": value + 0.2, "aps": 0.1,
                                                         "apm": 0.3, "apl": 0.5, "epoch_time_s": epoch_s,
                                                         "peak_rss_mb": 2000.0, "per_class": per_class}))
    return results


def test_analysis_verdicts_on_stubbed_runs():
    summary = analyse(_stub_results(0.01), MODELS, {})
    variant = summary["models"]["yolov8n-slimneck"]["vs_baseline"]
    assert variant["map"]["verdict"] == "better" and variant["map"]["mean"] == pytest.approx(0.01)
    assert variant["map50"]["verdict"] == "within noise"  # identical values: zero-width interval at 0
    assert summary["models"]["yolov8n"]["metrics"]["map"]["std"] == pytest.approx(0.0360555, rel=1e-4)
    assert variant["epoch_time_s"]["verdict"] == "better"  # 1 s faster every seed; lower is better for costs
    assert summary["models"]["yolov8n"]["per_class_ap"]["platelet"]["mean"] == pytest.approx(0.31)


def test_report_files_and_plots(tmp_path):
    results = _stub_results(-0.02)
    costs = {m: {"params": 3e6, "gflops": 8.0, "latency_ms": 20.0, "onnx_latency_ms": 15.0} for m in MODELS}
    summary = analyse(results, MODELS, costs)
    paths = write_report(summary, {"epochs": 1, "optimizer": "SGD"}, tmp_path, results)
    plots = write_plots(summary, results, tmp_path)
    md = paths["md"].read_text()
    assert "| yolov8n-slimneck | mAP50-95 | -2.00 |" in md and "worse" in md and "optimizer: SGD" in md
    assert json.loads(paths["json"].read_text())["summary"]["baseline"] == "yolov8n"
    assert paths["csv"].read_text().count("\n") == 3
    assert {p.name for p in plots} == {"map_vs_gflops.png", "map_vs_latency.png", "metrics.png"}
    assert "- not recorded: 6 run(s)" in md and "bit for bit" not in md  # one (unknown) machine: no caveat
    assert "| yolov8n | 11.0 ± 1.0 | — | — | baseline | 2000.0 ± 0.0 |" in md
    assert "| yolov8n-slimneck | 10.0 ± 1.0 | -1.0 | [-1.0, -1.0] | better | 2000.0 ± 0.0 |" in md
    assert "| model | cell | platelet |" in md and "| yolov8n-slimneck | 49.0 ± 3.6 | 29.0 ± 3.6 |" in md


def test_report_names_the_machines_when_runs_come_from_several(tmp_path):
    results = _stub_results(0.0)
    for r in results:
        r.machine = "cpu A" if r.seed < 2 else "cpu B"
    md = write_report(analyse(results, MODELS, {}), {}, tmp_path, results)["md"].read_text()
    assert "- cpu A: 4 run(s)" in md and "- cpu B: 2 run(s)" in md and "bit for bit only on the same hardware" in md


def test_finished_runs_are_reused_and_failures_reported(tmp_path):
    calls = []

    def run_fn(model, seed, run_dir, recipe, device):
        calls.append((model, seed))
        if model == MODELS[1] and seed == 1:
            raise RuntimeError("out of memory")
        return {"map": 0.5}

    lines = []
    first = run_all(MODELS, [0, 1], tmp_path, {}, run_fn=run_fn, log=lines.append)
    assert [r.ok for r in first] == [True, True, True, False] and "out of memory" in first[3].error
    assert "[1/4] yolov8n seed 0: done in 0 min, mAP50-95 0.500; about 0 min for the 3 left" in lines
    assert any("[4/4] yolov8n-slimneck seed 1: FAILED (out of memory)" in line for line in lines)
    recorded = json.loads((tmp_path / "runs" / "yolov8n-seed0" / "result.json").read_text())
    assert recorded["machine"] and "load average" not in recorded["machine"] and first[0].machine == recorded["machine"]
    calls.clear()
    again = run_all(MODELS, [0, 1], tmp_path, {}, run_fn=run_fn, log=lambda m: None)
    assert calls == [(MODELS[1], 1)]  # only the failed run is tried again
    assert sum(r.ok for r in again) == 3
    calls.clear()
    run_all(MODELS, [0], tmp_path, {"epochs": 5}, run_fn=run_fn, log=lambda m: None)
    assert calls == [(MODELS[0], 0), (MODELS[1], 0)]  # another recipe never reuses old results


def test_report_only_trains_nothing_and_lists_the_missing_runs(tmp_path):
    def run_fn(model, seed, run_dir, recipe, device):
        return {"map": 0.5 + 0.01 * seed, "map50": 0.7}

    run_all(MODELS, [0], tmp_path, {}, run_fn=run_fn, log=lambda m: None)  # seed 0 finished earlier

    def must_not_train(*args):
        raise AssertionError("report_only trained a run")

    results = run_all(MODELS, [0, 1], tmp_path, {}, run_fn=must_not_train, log=lambda m: None, report_only=True)
    assert [(r.seed, r.ok) for r in results] == [(0, True), (0, True), (1, False), (1, False)]
    summary = analyse(results, MODELS, {})
    assert summary["models"]["yolov8n"]["runs"] == 1 and summary["models"]["yolov8n"]["not_run"] == 1
    assert summary["models"]["yolov8n"]["failed"] == 0
    md = write_report(summary, {}, tmp_path, results)["md"].read_text()
    assert "| 1 (1 not run) | 50.0 |" in md and "- yolov8n-slimneck seed 1: not run yet (report_only=true)" in md
    assert "| yolov8n-slimneck | mAP50-95 | +0.00 | — | n/a |" in md  # one pair: a difference, no interval
    summary["models"]["yolov8n-slimneck"]["vs_baseline"]["map"].update(n=0, mean=float("nan"))
    assert "nan" not in write_report(summary, {}, tmp_path, results)["md"].read_text()  # no pair: no row


def test_runs_take_whichever_device_is_free(tmp_path):
    import threading

    busy, used, finished, lock = set(), {}, [], threading.Lock()
    first_started, others_done = threading.Event(), threading.Event()

    def run_fn(model, seed, run_dir, recipe, device):
        first = (model, seed) == (MODELS[0], 0)
        if not first:  # the first run holds its device from before the others start until after they all end
            assert first_started.wait(timeout=60)
        with lock:
            assert device not in busy, f"device {device} given to two runs at once"
            busy.add(device)
            used[(model, seed)] = device
        if first:
            first_started.set()
            assert others_done.wait(timeout=60)
        with lock:
            busy.remove(device)
            if not first:
                finished.append(device)
                if len(finished) == 5:
                    others_done.set()
        return {"map": 0.5}

    results = run_all(MODELS, [0, 1, 2], tmp_path, {}, run_fn=run_fn, devices=["0", "1"], log=lambda m: None)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    held = used.pop((MODELS[0], 0))
    assert set(used.values()) == {"0", "1"} - {held}  # the other runs all went to the device the first did not hold


def test_compare_refuses_an_unpinned_optimizer(tmp_path):
    from yololab.cfg import ConfigError
    from yololab.cli import run

    with pytest.raises(ConfigError, match="pins the recipe"):
        run("compare", {"models": ",".join(MODELS), "optimizer": "auto", "project": str(tmp_path)})


@pytest.mark.slow
def test_real_tiny_compare_writes_every_file(tmp_path, capsys, monkeypatch):
    from yololab.data import make_synthetic

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the training subprocesses share the 2 cores with other tests
    data = make_synthetic(tmp_path / "data", n_train=8, n_val=4, imgsz=128, seed=0)
    tiny = {"nc": 4, "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]],
                                  [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]]],
            "head": [[[2, 3, 4], 1, "Detect", ["nc"]]]}
    variant = {**tiny, "head": [[-1, 1, "GSConv", [32, 1, 1]], [[2, 3, 5], 1, "Detect", ["nc"]]]}
    files = []
    for name, cfg in (("base", tiny), ("variant", variant)):
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(cfg))
    code = main(["compare", f"models={files[0]},{files[1]}", f"data={data}", "seeds=2", "epochs=1", "imgsz=64",
                 "batch=4", "workers=0", f"project={tmp_path}", "name=cmp", "json=true"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    out = Path(result["out"])
    for name in ("report.md", "report.csv", "report.json", "map_vs_gflops.png", "map_vs_latency.png", "metrics.png",
                 "val_curves.png"):
        assert (out / name).is_file(), name
    assert result["models"]["variant"]["runs"] == 2
    md = (out / "report.md").read_text()
    assert "optimizer: SGD" in md and "lr0: 0.01" in md  # compare's pinned default, with SGD's lr written out
    assert result["models"]["variant"]["vs_baseline"]["map"]["verdict"] in ("better", "worse", "within noise")


def test_an_interrupted_run_of_the_same_recipe_resumes_from_last_pt(tmp_path):
    from yololab.ablation.runner import train_command
    from yololab.checkpoint import save_checkpoint

    run_dir, recipe = tmp_path / "yolov8n-seed0", {"epochs": 3, "optimizer": "SGD"}
    fresh = train_command(MODELS[0], 0, run_dir, recipe)
    assert "model=yolov8n.yaml" in fresh and "seed=0" in fresh and "epochs=3" in fresh
    last = run_dir / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    save_checkpoint(last, {}, {"epoch": 1}, optimizer={"state": {}, "param_groups": []})
    assert train_command(MODELS[0], 0, run_dir, recipe) == ["train", f"resume={last}", "json=true"]
    assert "epochs=5" in train_command(MODELS[0], 0, run_dir, {**recipe, "epochs": 5})  # another recipe: restart
    save_checkpoint(last, {}, {"epoch": 3})  # finished (no training state) but no result.json: train it again
    assert "model=yolov8n.yaml" in train_command(MODELS[0], 0, run_dir, recipe)


def test_report_marks_runs_whose_validation_collapsed(tmp_path):
    def run(model: str, seed: int, scores: list[float]) -> RunResult:
        run_dir = tmp_path / f"{Path(model).stem}-seed{seed}"
        run_dir.mkdir()
        rows = ["epoch,train/box_loss,train/cls_loss,train/dfl_loss,metrics/mAP50-95"]
        rows += [f"{e},{2 - 0.05 * e},{1.5 - 0.04 * e},{1.2 - 0.01 * e},{s}" for e, s in enumerate(scores, 1)]
        (run_dir / "results.csv").write_text("\n".join(rows) + "\n")
        return RunResult(model, seed, True, {"map": scores[-1]}, run_dir=str(run_dir))

    smooth = [0.01, 0.05, 0.10, 0.15, 0.20, 0.25]
    collapsed = [0.01, 0.05, 0.10, 0.15, 0.002, 0.25]  # epoch 5 falls to 1% of the best while the loss keeps falling
    results = [run(MODELS[0], 0, smooth), run(MODELS[1], 0, collapsed)]
    summary = analyse(results, MODELS, {})
    assert summary["models"]["yolov8n"]["health"]["unhealthy_runs"] == 0
    assert summary["models"]["yolov8n-slimneck"]["health"]["collapses"] == {"0": ["epoch 5: mAP50-95 0.002 after a "
                                                                                   "best of 0.150"]}
    md = write_report(summary, {}, tmp_path, results)["md"].read_text()
    assert "## Run health" in md and "**yolov8n-slimneck**: 1 of 1 runs had validation collapses" in md
    assert "**yolov8n**:" not in md
    healthy = write_report(analyse(results[:1], MODELS[:1], {}), {}, tmp_path / "healthy", results[:1])
    assert "No validation collapse in any of the 1 finished runs" in healthy["md"].read_text()
