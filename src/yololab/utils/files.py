"""Run folders, atomic file writes and JSON conversion."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def run_dir(project: str | Path | None, name: str, exist_ok: bool = False) -> Path:
    """``project/name``, or the first free ``name2``, ``name3``... unless ``exist_ok``."""
    project = Path(project or "runs")
    path, n = project / name, 2
    while path.exists() and not exist_ok:
        path, n = project / f"{name}{n}", n + 1
    return path


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None], fsync: bool = False) -> Path:
    """Write a file through ``write(fileobj)`` into a temporary sibling, then rename it over ``path``.

    Readers never see a half-written file and concurrent writers cannot interleave; ``fsync`` also makes the
    content durable before the rename (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback: arrays and tensors as lists, anything else as its string."""
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types (what it reads back as after a JSON round trip)."""
    return json.loads(json.dumps(obj, default=json_default))


def write_json(path: str | Path, data: Any, indent: int | None = None) -> Path:
    """Write ``data`` as JSON, atomically."""
    text = json.dumps(data, indent=indent, default=json_default)
    return write_atomic(path, lambda f: f.write(text.encode()))
