"""Cache folder and atomic file writing (shared by the label cache and the synthetic dataset)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO


def cache_root() -> Path:
    """``$YOLOLAB_CACHE`` if set, else ``~/.cache/yololab``."""
    env = os.environ.get("YOLOLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "yololab"


def is_writable_dir(path: Path) -> bool:
    """True when ``path`` is an existing folder meant to be written to.

    A folder without any write permission bit counts as read-only even for root, who could force it.
    """
    return path.is_dir() and bool(path.stat().st_mode & 0o222) and os.access(path, os.W_OK | os.X_OK)


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through ``write(fileobj)`` into a temporary sibling, then rename it over ``path``.

    Readers never see a half-written file and concurrent writers cannot interleave.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
