"""benchmarks/gpu_check.sh --dry-run: the GPU check's whole script on CPU with tiny sizes, so it is known to work
before any GPU time is spent. The peer's part runs when benchmarks/.peer-venv exists."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "| batch | format |" in (out / "gpu_check.md").read_text()
    return json.loads((out / "gpu_check.json").read_text())


def test_dry_run_runs_every_phase_on_cpu(report):
    assert report["dry_run"] and report["environment"]["device"] == "cpu"
    tests = report["tests"]
    assert tests["returncode"] == 0 and tests["skipped"] > 0 and "failed" not in tests and "passed" not in tests
    assert all("needs a CUDA GPU" in reason for reason in tests["skip_reasons"])
    ours = report["train"]["sides"]["yololab"]
    assert ours["images_per_s"] > 0 and ours["epoch_train_s"] > 0 and 0 <= ours["map"] <= ours["map50"] <= 1
    assert ours["gpu_monitor"] == "no CUDA device"
    timings = report["latency"]["timings"]
    assert report["latency"]["onnxruntime_provider"] == "CPUExecutionProvider"
    for name in ("ours torch-fp32 b1", "ours torch-fp32 b2", "ours onnx b1", "ours onnx b2"):
        assert timings[name]["median_ms"] > 0, name
    assert not any("fp16" in name for name in timings)  # float16 latency is measured on CUDA only


def test_dry_run_trains_and_times_the_peer(report):
    if report["environment"]["peer"] is None:
        pytest.skip("peer not installed (benchmarks/.peer-venv absent: benchmarks/peer/setup.sh, or "
                    "benchmarks/gpu_prepare.sh then gpu_check.sh)")
    peer = report["train"]["sides"]["ultralytics 8.4.190"]
    assert peer["images_per_s"] > 0 and 0 <= peer["map"] <= peer["map50"] <= 1
    assert report["train"]["throughput_ours_over_peer"] > 0
    assert report["latency"]["peer_output_max_rel_diff"] < 1e-4  # same weights, same outputs
    for name in ("peer torch-fp32 b1", "peer torch-fp32 b2", "peer onnx b1", "peer onnx b2"):
        assert report["latency"]["timings"][name]["median_ms"] > 0, name
