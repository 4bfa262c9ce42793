"""Load user plug-in files that register their own modules with ``@yololab.register``."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

from torch import nn

from .errors import UserError

_LOADED: dict[Path, object] = {}


class PluginError(UserError):
    """A plug-in file that could not be loaded; the message names the file and line."""


def load_plugins(paths: str | Path | list) -> list[Path]:
    """Import each plug-in file once (comma-separated string or list); return the resolved paths."""
    if isinstance(paths, (str, Path)):
        paths = [p for p in str(paths).split(",") if p.strip()]
    loaded = []
    for raw in paths:
        path = Path(str(raw).strip()).expanduser().resolve()
        if path in _LOADED:
            loaded.append(path)
            continue
        if not path.is_file():
            raise PluginError(f"plug-in file not found: {path}")
        _LOADED[path] = _import_file(path)
        loaded.append(path)
    return loaded


def _import_file(path: Path) -> object:
    name = f"yololab_plugin_{path.stem}_{abs(hash(path)) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise PluginError(f"plug-in {path} line {e.lineno}: SyntaxError: {e.msg}") from None
    except Exception as e:  # any error in user code is reported with its file and line
        sys.modules.pop(name, None)
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == path]
        line = frames[-1].lineno if frames else "?"
        raise PluginError(f"plug-in {path} line {line}: {type(e).__name__}: {e}") from None
    _mark_uncompiled(module, path)
    return module


def _mark_uncompiled(module: object, path: Path) -> None:
    """Give the plug-in's modules a ``compile_unsupported`` reason (compile=true runs them uncompiled) unless their
    class states its own (``compile_unsupported = None`` to compile it)."""
    for obj in vars(module).values():
        if (isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__
                and "compile_unsupported" not in vars(obj)):
            obj.compile_unsupported = (f"a plug-in module from {path.name}, not checked with torch.compile "
                                       "(set compile_unsupported = None in its class to compile it)")
