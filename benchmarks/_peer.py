"""Run a benchmark body inside the peer's venv (Ultralytics, installed by benchmarks/peer/setup.sh).

The peer is never imported by ``src/``: benchmarks that compare side by side re-execute themselves
with the peer venv's Python, which sees our sources through ``sys.path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / "benchmarks" / ".peer-venv" / "bin" / "python"


def peer_available() -> bool:
    """True when benchmarks/.peer-venv exists with ultralytics installed."""
    return PEER_PYTHON.is_file()


def peer_env() -> dict[str, str]:
    """Environment that keeps the peer offline and its settings private."""
    cfg = Path(tempfile.gettempdir()) / "yololab-peer-config"
    cfg.mkdir(exist_ok=True)
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(cfg), PYTHONPATH=str(ROOT / "src"))
    return env


def rerun_in_peer(script: str, *args: str) -> int:
    """Re-execute ``script`` with the peer Python (with ``--in-peer``); return its exit code."""
    return subprocess.call([str(PEER_PYTHON), script, "--in-peer", *args], env=peer_env())


def in_peer() -> bool:
    return "--in-peer" in sys.argv
