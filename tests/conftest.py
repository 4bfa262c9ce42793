"""Shared test fixtures and paths."""

from __future__ import annotations

import os
from pathlib import Path

# idle OpenMP threads sleep instead of spinning: with several processes on 2 cores, spinning threads
# waste the CPU the other process needs (set before torch is imported)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# pytest runs with -n 2 on 2 cores: one intra-op thread per worker avoids oversubscription
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/datasets, or skip the test with the reason."""
    path = SHARED / "datasets" / name
    if not (path / "data.yaml").is_file():
        pytest.skip(f"../shared/datasets/{name} not present")
    return path
