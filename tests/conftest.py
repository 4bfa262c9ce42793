"""Shared test fixtures and paths."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from types import ModuleType

import pytest

import yololab  # noqa: F401  (first: its thread policy must reach the OpenMP runtime before torch loads it)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# the first BCCD ablation's runs, validated with stale BatchNorm statistics (issue #24), kept as they were recorded
FIRST_ABLATION_RUNS = ROOT / "benchmarks" / "records" / "ablation-bccd-v1" / "runs"
# the re-run after the fix (validated model recalibrated to its own weights), same models, seeds and recipe
ABLATION_RUNS = ROOT / "benchmarks" / "ablation-bccd" / "runs"


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (its sibling helpers, e.g. ``_tables``, importable)."""
    benchmarks = str(ROOT / "benchmarks")
    spec = importlib.util.spec_from_file_location(name, f"{benchmarks}/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, benchmarks)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(benchmarks)
    return module


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing may reach the network at run time: looking up or connecting to any other host fails the test."""
    refuse_network(monkeypatch)


def refuse_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process fail on looking up or connecting to any host but this one (session fixtures use it too)."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def refuse(host) -> None:
        raise RuntimeError(f"a test tried to reach the network ({host}); yololab must work offline")

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL_HOSTS:
            refuse(address)
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and str(host) not in LOCAL_HOSTS:
            refuse(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/datasets, or skip the test with the reason."""
    path = SHARED / "datasets" / name
    if not (path / "data.yaml").is_file():
        pytest.skip(f"../shared/datasets/{name} not present")
    return path

