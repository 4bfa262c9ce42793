"""compare executor=ray: a local Ray (bound to 127.0.0.1) runs the same trainings as the local executor, survives a
killed worker, and nothing of Ray is imported on the default path."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, refuse_network
from tiny_training import TINY_MODEL, tiny_dataset
from yololab.ablation.command import ray_executor
from yololab.ablation.runner import run_all
from yololab.ablation.statistics import ACCURACY_METRICS
from yololab.cfg import ConfigError, settings
from yololab.errors import UserError

VARIANT = {**TINY_MODEL, "head": [[-1, 1, "GSConv", [64, 1, 1]], [[4, 6, 9], 1, "Detect", ["nc"]]]}


def test_default_path_and_every_command_import_no_ray(tmp_path):
    code = f"""
import pkgutil, sys
from pathlib import Path
import yololab, yololab.cli
for m in pkgutil.walk_packages(yololab.__path__, "yololab."):
    if m.name not in ("yololab.__main__", "yololab.ablation.ray_executor"):  # __main__ runs the CLI
        __import__(m.name)
from yololab.ablation.command import ray_executor
from yololab.ablation.runner import run_all
from yololab.cfg import settings
assert ray_executor(settings("compare", {{"models": "a.yaml,b.yaml"}}), Path("x"), None) is None
run_all(["a.yaml", "b.yaml"], [0], Path({str(tmp_path)!r}), {{}}, run_fn=lambda *a: {{"map": 0.5}}, log=print)
assert "ray" not in sys.modules, "ray was imported"
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[####################] 2/2 runs" in done.stdout  # the progress bar of the default executor


def test_ray_settings_are_checked(monkeypatch):
    with pytest.raises(ConfigError, match="only apply to executor=ray"):
        ray_executor(settings("compare", {"models": "a,b", "cpus_per_run": 2}), Path("x"), None)
    with pytest.raises(ConfigError, match="gpus_per_run"):
        ray_executor(settings("compare", {"models": "a,b", "executor": "ray", "device": "0,1"}), Path("x"), ["0", "1"])
    with pytest.raises(ConfigError, match="executor must be local or ray"):
        settings("compare", {"executor": "slurm"})
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UserError, match=r"pip install yololab\[ray\]"):
        ray_executor(settings("compare", {"models": "a,b", "executor": "ray"}), Path("x"), None).__enter__()


@pytest.fixture(scope="session")
def local_ray():
    """One Ray per test process, bound to 127.0.0.1, started under the network guard. Under pytest-xdist each
    worker process that runs these tests starts its own in its own temporary folder (Ray picks free ports): no
    instance is shared, so none is stopped under another worker's feet. One CPU each: a run at a time per worker."""
    from yololab.ablation.ray_executor import import_ray, start_local_ray

    with pytest.MonkeyPatch.context() as monkeypatch:
        refuse_network(monkeypatch)
        temp_dir = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must stay under 107 characters
        start_local_ray(num_cpus=1, temp_dir=temp_dir)
    ray = import_ray()
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_run_larger_than_the_cluster_is_refused(tmp_path, local_ray):
    from yololab.ablation.ray_executor import RayExecutor

    with pytest.raises(UserError, match="cpus_per_run=64 but the Ray cluster has 1 CPUs"):
        RayExecutor(tmp_path, cpus_per_run=64).__enter__()
    assert local_ray.is_initialized()  # a Ray the executor did not start is left running


def _tiny_comparison(tmp_path: Path, epochs: int) -> tuple[list[str], dict]:
    models = []
    for name, cfg in (("base", TINY_MODEL), ("variant", VARIANT)):
        models.append(str(tmp_path / f"{name}.yaml"))
        Path(models[-1]).write_text(yaml.safe_dump(cfg))
    data = tiny_dataset(tmp_path / "data")
    recipe = {"data": str(data), "epochs": epochs, "imgsz": 64, "batch": 4, "nbs": 8, "workers": 0, "mosaic": 0.0,
              "close_mosaic": 0, "warmup_epochs": 1, "optimizer": "SGD", "lr0": 0.01, "plots": False}
    return models, recipe


def test_ray_runs_equal_local_runs(tmp_path, local_ray, monkeypatch):
    from yololab.ablation.ray_executor import RayExecutor, worker_folder

    models, recipe = _tiny_comparison(tmp_path, epochs=1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the local runs' threads: what cpus_per_run=1 gives the Ray runs
    local: list = []  # the local comparison trains beside the Ray one: two single-threaded runs at a time
    beside = threading.Thread(target=lambda: local.extend(run_all(models, [0, 1], tmp_path / "local", recipe,
                                                                  log=lambda m: None)))
    beside.start()
    lines = []
    # shared_fs=False: the runs train in the worker's folder and their files come back through Ray
    with RayExecutor(tmp_path / "ray", cpus_per_run=1, fetch_weights=True, shared_fs=False) as executor:
        remote = run_all(models, [0, 1], tmp_path / "ray", recipe, run_fn=executor, parallel=executor.parallel,
                         log=lines.append)
    beside.join()
    assert len(local) == 4
    assert all(r.ok for r in local + remote), [r.error for r in local + remote if not r.ok]
    for a, b in zip(local, remote):
        assert {k: a.metrics[k] for k in ACCURACY_METRICS} == {k: b.metrics[k] for k in ACCURACY_METRICS}
        run_a, run_b = Path(a.run_dir), Path(b.run_dir)
        for name in ("results.csv", "predictions.json.gz", "args.yaml", "result.json"):
            assert (run_b / name).is_file(), name
        assert (run_a / "predictions.json.gz").read_bytes() == (run_b / "predictions.json.gz").read_bytes()
        weights_a = torch.load(run_a / "weights" / "best.pt", weights_only=True)["model"]
        weights_b = torch.load(run_b / "weights" / "best.pt", weights_only=True)["model"]
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
        assert not worker_folder(str(run_b.resolve())).parent.exists()  # the worker's copy is removed once sent
    assert "[####################] 4/4 runs" in lines
    assert not (tmp_path / "ray" / ".ray-driver").exists()  # the shared-folder marker is removed at the end


def test_a_killed_worker_is_retried_and_its_run_resumes(tmp_path, local_ray):
    from yololab.ablation.ray_executor import RayExecutor

    models, recipe = _tiny_comparison(tmp_path, epochs=4)
    broken = tmp_path / "broken.yaml"  # fails for its own reason: reported, not retried
    broken.write_text(yaml.safe_dump({**TINY_MODEL, "backbone": [[-1, 1, "NoSuchBlock", [16]]]}))
    out = tmp_path / "cmp"
    victim = out / "runs" / "base-seed0"
    killed: list[int] = []

    def kill_the_worker() -> None:
        """Once the first run has checkpointed an epoch, SIGKILL the Ray worker running it (the training process
        is its child and dies with it)."""
        deadline = time.time() + 120
        while time.time() < deadline and not (victim / "weights" / "last.pt").is_file():
            time.sleep(0.2)
        for pid in _training_processes(victim.name):
            worker = _parent(pid)
            assert Path(f"/proc/{worker}/cmdline").read_bytes().startswith(b"ray::"), "not a Ray worker"
            os.kill(worker, signal.SIGKILL)
            killed.append(worker)
            return

    watcher = threading.Thread(target=kill_the_worker)
    watcher.start()
    lines = []
    with RayExecutor(out, cpus_per_run=1, max_retries=1) as executor:  # one machine: the run writes in place
        results = run_all([*models, str(broken)], [0], out, recipe, run_fn=executor, log=lines.append)
    watcher.join()
    assert killed, "no training process of the first run was found to kill"
    assert [r.ok for r in results] == [True, True, False], [r.error for r in results]
    assert "resuming" in (victim / "stdout.log").read_text()  # the retry continued from last.pt
    assert results[2].error.startswith("exit code 2: ") and "unknown module 'NoSuchBlock'" in results[2].error
    assert "[####################] 3/3 runs (1 failed or not run)" in lines


def _training_processes(run_name: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"yololab" in cmdline and b"train" in cmdline and any(run_name.encode() in arg for arg in cmdline):
            pids.append(int(proc.name))
    return pids


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])
