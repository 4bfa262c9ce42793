"""Run folders."""

from __future__ import annotations

from pathlib import Path


def run_dir(project: str | Path | None, name: str, exist_ok: bool = False) -> Path:
    """``project/name``, or the first free ``name2``, ``name3``... unless ``exist_ok``."""
    project = Path(project or "runs")
    path, n = project / name, 2
    while path.exists() and not exist_ok:
        path, n = project / f"{name}{n}", n + 1
    return path
