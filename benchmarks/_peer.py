"""Run a benchmark body inside the peer's venv (Ultralytics, installed by benchmarks/peer/setup.sh; the packaged
YOLOv5 by benchmarks/peer/setup_yolov5.sh).

The peer is never imported by ``src/``: benchmarks that compare side by side re-execute themselves
with the peer venv's Python, which sees our sources through ``sys.path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / "benchmarks" / ".peer-venv" / "bin" / "python"
PEER_CONFIG = ROOT / "benchmarks" / ".cache" / "peer-config"  # setup.sh puts the local font here (no download)
YOLOV5_PYTHON = ROOT / "benchmarks" / ".peer-yolov5-venv" / "bin" / "python"
YOLOV5_CONFIG = ROOT / "benchmarks" / ".cache" / "peer-yolov5-config"  # setup_yolov5.sh puts Arial.ttf here


def peer_available() -> bool:
    """True when benchmarks/.peer-venv exists with ultralytics installed."""
    return PEER_PYTHON.is_file()


def peer_env() -> dict[str, str]:
    """Environment that keeps the peer offline and its settings private."""
    PEER_CONFIG.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(PEER_CONFIG), MPLBACKEND="Agg",
                PYTHONPATH=str(ROOT / "src"))


def yolov5_env() -> dict[str, str]:
    """Environment of the packaged YOLOv5 process: offline, a private config dir holding the local font, no
    auto-install, and torch.load's pre-2.6 default (its checkpoint strip does not pass weights_only=False)."""
    YOLOV5_CONFIG.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, YOLOV5_CONFIG_DIR=str(YOLOV5_CONFIG), YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false",
                TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", MPLBACKEND="Agg", PYTHONPATH=str(ROOT / "src"))


def rerun_in_peer(script: str, *args: str) -> int:
    """Re-execute ``script`` with the peer Python (with ``--in-peer``); return its exit code."""
    return subprocess.call([str(PEER_PYTHON), script, "--in-peer", *args], env=peer_env())


def in_peer() -> bool:
    return "--in-peer" in sys.argv
