"""Latency benchmark: timing helper, formats and devices, the bench command."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tiny_training import TINY_MODEL
from yololab.cli import main
from yololab.engine.bench import bench, bench_devices, parse_formats
from yololab.nn import DetectionModel
from yololab.utils.profile import time_calls


def test_time_calls_counts_warmup_and_runs():
    calls = []
    stats = time_calls(lambda: calls.append(1), warmup=2, runs=5)
    assert len(calls) == 7 and 0 <= stats["median_ms"] <= stats["p90_ms"]
    with pytest.raises(ValueError, match="runs must be at least 1"):
        time_calls(lambda: None, runs=0)


def test_formats_and_devices():
    assert parse_formats("torch, ONNX") == ["torch", "onnx"] and parse_formats(["onnx"]) == ["onnx"]
    with pytest.raises(ValueError, match="unknown bench format"):
        parse_formats("torch,tflite")
    assert bench_devices(None)[0] == torch.device("cpu") and bench_devices("cpu") == [torch.device("cpu")]
    assert len(bench_devices("")) == 1 + torch.cuda.is_available()


def test_bench_times_fused_torch_and_onnx():
    model = DetectionModel(TINY_MODEL)
    result = bench(model, imgsz=64, batch=2, formats="torch,onnx", runs=3, warmup=1, device="cpu", verbose=False)
    assert [(r["format"], r["device"]) for r in result["results"]] == [("torch", "cpu"), ("onnx", "cpu")]
    assert all(0 < r["median_ms"] <= r["p90_ms"] for r in result["results"])
    assert result["batch"] == 2 and result["threads"] == torch.get_num_threads()
    assert f"torch {torch.__version__}" in result["machine"] and "CPU cores" in result["machine"]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the caller's model is not fused


def test_bench_command_json(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_MODEL))
    args = ["bench", f"model={cfg}", "imgsz=64", "batch=1", "formats=torch", "runs=2", "warmup=1", "device=cpu",
            "json=true"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["results"][0]["format"] == "torch" and result["results"][0]["median_ms"] > 0
