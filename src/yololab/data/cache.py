"""The cache folder (shared by the label cache and the synthetic dataset)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$YOLOLAB_CACHE`` if set, else ``~/.cache/yololab``."""
    env = os.environ.get("YOLOLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "yololab"


def is_writable_dir(path: Path) -> bool:
    """True when ``path`` is an existing folder meant to be written to.

    A folder without any write permission bit counts as read-only even for root, who could force it.
    """
    return path.is_dir() and bool(path.stat().st_mode & 0o222) and os.access(path, os.W_OK | os.X_OK)
