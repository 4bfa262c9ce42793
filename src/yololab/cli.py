"""Command line: ``yololab <command> key=value ...``.

Every command validates its keys (unknown keys are errors with a suggestion) and, with
``json=true``, prints one JSON object as the last stdout line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

from .cfg import ConfigError, merge, parse_value
from .utils.files import json_text

OUTPUT_KEYS = ("json", "verbose")


@dataclass
class Command:
    """A CLI command: the function taking merged settings and the keys it accepts."""

    func: Callable[[dict[str, Any]], dict | None]
    keys: tuple[str, ...]
    help: str
    defaults: dict[str, Any]


COMMANDS: dict[str, Command] = {}


def command(name: str, keys: tuple[str, ...], help: str, defaults: dict[str, Any] | None = None):
    """Register ``func(settings) -> result dict | None`` as ``yololab <name>``.

    ``defaults`` overrides default.yaml for this command only (e.g. ``batch=1`` for ``bench``).
    """

    def decorator(func):
        COMMANDS[name] = Command(func, tuple(keys) + OUTPUT_KEYS, help, dict(defaults or {}))
        return func

    return decorator


def parse_argv(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """``['info', 'model=yolov8n.yaml']`` -> ('info', {'model': 'yolov8n.yaml'})."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        return "help", {}
    name, overrides = argv[0], {}
    for item in argv[1:]:
        if "=" not in item:
            raise ConfigError(f"arguments are key=value, got '{item}'")
        key, value = item.split("=", 1)
        overrides[key.strip().replace("-", "_")] = parse_value(value.strip())
    return name, overrides


def run(name: str, overrides: dict[str, Any]) -> dict | None:
    """Run one command with user overrides (also the Python entry used by tests)."""
    from . import commands  # noqa: F401  (registers every command)

    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"unknown command '{name}'.{hint} Commands: {', '.join(sorted(COMMANDS))}")
    cmd = COMMANDS[name]
    settings = merge({**cmd.defaults, **overrides}, cmd.keys, where=f"'yololab {name}'")
    if settings.get("plugins"):
        from .plugins import load_plugins

        load_plugins(settings["plugins"])
    return cmd.func(settings)


def _print_help() -> None:
    from . import commands  # noqa: F401  (registers every command)

    print("usage: yololab <command> key=value ...\n\ncommands:")
    for name, cmd in sorted(COMMANDS.items()):
        print(f"  {name:<12} {cmd.help}")
    print("\nEvery command that reports numbers accepts json=true (one JSON object on the last line).")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``yololab`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        name, overrides = parse_argv(argv)
        if name == "help":
            _print_help()
            return 0
        result = run(name, overrides)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"yololab: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("yololab: interrupted", file=sys.stderr)
        return 130
    if overrides.get("json") and result is not None:
        print(json_text(result))
    return 0
