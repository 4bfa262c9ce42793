"""Run folders and their lock, atomic file writes and JSON conversion."""

from __future__ import annotations

import datetime
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Callable

from ..errors import UserError

TEMP_SUFFIX = ".tmp"  # write_atomic's temporary files: ".<name>.<random>.tmp" beside the target


def run_dir(project: str | Path | None, name: str, exist_ok: bool = False) -> Path:
    """``project/name``, or the first free ``name2``, ``name3``... unless ``exist_ok``."""
    project = Path(project or "runs")
    path, n = project / name, 2
    while path.exists() and not exist_ok:
        path, n = project / f"{name}{n}", n + 1
    return path


def read_text(path: str | Path) -> str:
    """The UTF-8 text of a file the user gave; one that is not UTF-8 is a UserError naming it and the first bad byte."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None], fsync: bool = False) -> Path:
    """Write a file through ``write(fileobj)`` into a temporary sibling, then rename it over ``path``.

    Readers never see a half-written file and concurrent writers cannot interleave; ``fsync`` also makes the
    content durable before the rename (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, _default_file_mode())  # mkstemp's 0600 would make every checkpoint private to its writer
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


def _default_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (read by setting and restoring it)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that an interrupted ``write_atomic`` left in ``folder`` (call it while holding
    the folder's ``RunLock``, so no live writer owns them); returns what was removed."""
    stale = sorted(Path(folder).glob(f".*{TEMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class RunLockedError(UserError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """An exclusive OS lock on a folder (``.lock`` inside it), held while one process writes there.

    ``flock`` locks belong to the open file, so the OS releases them when the holder exits or is killed: a crashed
    run never leaves a folder locked. The lock file records the holder's PID and start time for the error message.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.file = self.folder / ".lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.file, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(f"{self.folder} is in use by {holder}: one process writes a run folder at a time "
                                 "(wait for it, or choose another name=)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} started {datetime.datetime.now().isoformat(timespec='seconds')}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


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
