"""Run folders, atomic file writes and JSON conversion."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
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


def _json_default(obj: Any) -> Any:
    """``json.dumps`` fallback: arrays and tensors as lists, mappings (typed settings) as dicts, else the string."""
    if isinstance(obj, Mapping):
        return dict(obj)
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types (what it reads back as after a JSON round trip); NaN and infinity become None,
    which strict JSON readers accept."""
    return _finite(json.loads(json.dumps(obj, default=_json_default)))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def json_text(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (see ``to_jsonable``)."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: str | Path, data: Any, indent: int | None = None) -> Path:
    """Write ``data`` as strict JSON, atomically."""
    text = json_text(data, indent)
    return write_atomic(path, lambda f: f.write(text.encode()))
