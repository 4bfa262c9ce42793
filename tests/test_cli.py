"""Command line conventions: strict keys with suggestions, JSON last line, per-command defaults."""

from __future__ import annotations

import json

import pytest

from yololab.cfg import ConfigError, parse_value
from yololab.cli import COMMANDS, main, parse_argv


def test_values_parse_as_yaml_scalars():
    assert parse_value("true") is True and parse_value("0.5") == 0.5 and parse_value("16") == 16
    assert parse_value("0,1") == "0,1" and parse_value("") is None and parse_value("yolov8n.yaml") == "yolov8n.yaml"
    assert parse_argv(["info", "model=a.yaml", "json=true"]) == ("info", {"model": "a.yaml", "json": True})


def test_unknown_key_is_an_error_with_a_suggestion(capsys):
    assert main(["info", "model=yolov8n.yaml", "imgs=320"]) == 2
    assert "unknown setting 'imgs' for 'yololab info'. Did you mean 'imgsz'?" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        from yololab.cli import run

        run("train", {"epoch": 3})


def test_unknown_command_suggests(capsys):
    assert main(["trian"]) == 2
    assert "Did you mean train" in capsys.readouterr().err


def test_json_is_the_last_stdout_line(capsys):
    assert main(["info", "model=yolov8n.yaml", "imgsz=320", "json=true"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["params"] == 3_157_200 and result["layers"] == 23 and result["gflops"] > 0


def test_bench_defaults_to_batch_one(capsys):
    assert COMMANDS["bench"].defaults == {"batch": 1}
    assert main(["bench", "model=yolov8n.yaml", "imgsz=64", "formats=torch", "runs=1", "warmup=0", "device=cpu",
                 "json=true"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["batch"] == 1


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("info", "modules", "check-data", "convert", "train", "val", "predict", "export", "bench", "compare"):
        assert f"  {name}" in out


def test_every_command_key_is_documented_in_default_yaml():
    from yololab.cfg import defaults

    undocumented = {f"{name}: {key}" for name, cmd in COMMANDS.items() for key in cmd.keys if key not in defaults()}
    assert not undocumented, f"keys missing from cfg/default.yaml: {sorted(undocumented)}"


def test_run_dirs_are_numbered_unless_exist_ok(tmp_path):
    from yololab.utils.files import run_dir

    assert run_dir(tmp_path, "train") == tmp_path / "train"
    (tmp_path / "train").mkdir()
    (tmp_path / "train2").mkdir()
    assert run_dir(tmp_path, "train") == tmp_path / "train3"
    assert run_dir(tmp_path, "train", exist_ok=True) == tmp_path / "train"


def test_json_output_is_strict_json():
    import numpy as np
    import torch

    from yololab.utils.files import json_text

    text = json_text({"nan": float("nan"), "inf": [float("inf")], "t": torch.tensor([1.5]), "n": np.float32(2.0)})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}")) == \
        {"nan": None, "inf": [None], "t": [1.5], "n": 2.0}


def test_tests_run_offline():
    """conftest's guard: a test that reaches for the network fails instead of downloading (weights, fonts)."""
    import socket
    import urllib.request

    with pytest.raises(RuntimeError, match="must work offline"):
        socket.create_connection(("example.com", 443), timeout=1)
    with pytest.raises(RuntimeError, match="must work offline"):
        urllib.request.urlopen("https://huggingface.co", timeout=1)
