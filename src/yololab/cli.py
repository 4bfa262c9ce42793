"""Command line: ``yololab <command> key=value ...``: argv parsing, the user-error boundary and printing.

Every command's keys and defaults come from ``cfg/default.yaml`` (unknown keys are errors with a suggestion); the
work is done by ``yololab.api`` (and ``yololab.ablation`` for ``compare``). With ``json=true`` a command prints one
JSON object as the last stdout line.
"""

from __future__ import annotations

import difflib
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from . import api
from ._version import __version__
from .ablation.command import compare_command
from .cfg import ConfigError, Settings, command_defaults, command_keys, parse_value, settings
from .data import format_check_report, format_problems
from .errors import UserError
from .plugins import load_plugins
from .utils.files import json_text
from .utils.threads import set_threads

Printer = Callable[[dict, Settings], None]

# file-system errors that name a path the user gave (or a folder under it): printed as one line like UserError
PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


@dataclass(frozen=True)
class Command:
    """A CLI command: the function taking its typed settings, its help line and how its result is printed."""

    name: str
    func: Callable[[Settings], dict | None]
    help: str
    printer: Printer | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys it accepts (``cfg/default.yaml``)."""
        return command_keys(self.name)

    @property
    def defaults(self) -> dict[str, Any]:
        """The defaults it sets differently from the rest of default.yaml."""
        return command_defaults(self.name)


def _print_info(result: dict, s: Settings) -> None:
    print(api.format_summary(result))


def _print_modules(result: dict, s: Settings) -> None:
    width = max(len(n) for n in result["modules"])
    for name, description in result["modules"].items():
        print(f"{name:<{width}}  [{result['flags'][name]:<3}] {description}")
    print(f"\ntorch.nn allow-list: {', '.join(result['torch'])}")
    print("flags: c = takes input channels, w = first arg is a scaled width, n = takes the repeat count")


def _print_check_data(result: dict, s: Settings) -> None:
    print(format_check_report(result))


def _print_convert(result: dict, s: Settings) -> None:
    counts = ", ".join(f"{k} {v['images']} images / {v['boxes']} boxes" for k, v in result["splits"].items())
    print(f"wrote {result['to']} dataset to {result['out']}: {counts}")
    for line in format_problems(result["problems"]):
        print(line)


def _print_predict(result: dict, s: Settings) -> None:
    speed = ", ".join(f"{v} ms {k}" for k, v in result["speed_ms"].items())
    saved = f"; results saved to {result['save_dir']}" if result["save_dir"] else ""
    print(f"{result['images']} images, {result['detections']} detections; {speed} per image{saved}")


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("info", api.info, "layer table, parameters and GFLOPs of a model", _print_info),
    Command("modules", api.modules, "list the registered modules with a one-line description", _print_modules),
    Command("check-data", api.check_data, "images, boxes, object sizes and every problem of a dataset (with model=: "
                                          "how its anchors fit)", _print_check_data),
    Command("convert", api.convert, "convert a dataset between YOLO txt, COCO json and VOC xml", _print_convert),
    Command("train", api.train, "train a model (device=0,1 starts DDP through torchrun)"),
    Command("val", api.val, "COCO mAP with APs/APm/APl, per-class table, PR/F1 curves, confusion matrix "
                            "(or score gt= pred= COCO json files)"),
    Command("predict", api.predict, "detect objects in images, folders, globs, videos or .txt lists (slice= for "
                                    "tiles)", _print_predict),
    Command("export", api.export, "export the fused model to ONNX or OpenVINO IR (float32 or INT8), checked against PyTorch"),
    Command("bench", api.bench, "median and p90 latency of the fused model per format (torch, onnx, openvino, ...) and device"),
    Command("compare", compare_command, "train models x seeds under one pinned recipe; verdicts better/worse/"
                                        "within noise"),
)}


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


def command_settings(name: str, overrides: dict[str, Any]) -> Settings:
    """The typed settings of ``yololab <name>`` with the user's ``overrides`` (unknown commands suggest one)."""
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"unknown command '{name}'.{hint} Commands: {', '.join(sorted(COMMANDS))}")
    return settings(name, overrides, where=f"'yololab {name}'")


def run(name: str, overrides: dict[str, Any]) -> dict | None:
    """Run one command with user overrides (also the Python entry used by tests); prints nothing itself."""
    return _execute(name, command_settings(name, overrides))


def _execute(name: str, s: Settings) -> dict | None:
    if s.get("plugins"):
        load_plugins(s["plugins"])
    set_threads(s.get("threads"))
    return COMMANDS[name].func(s)


def _print_help() -> None:
    print("usage: yololab <command> key=value ...\n\ncommands:")
    for name, cmd in sorted(COMMANDS.items()):
        print(f"  {name:<12} {cmd.help}")
    print("\nEvery command that reports numbers accepts json=true (one JSON object on the last line).")


def user_message(e: BaseException) -> str:
    """One line for a user error: its message, or for a file-system error what happened to which path."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.strerror or type(e).__name__}: {e.filename}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``yololab`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 file name is printed with \x escapes, never fails
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        name, overrides = parse_argv(argv)
        if name == "help":
            _print_help()
            return 0
        s = command_settings(name, overrides)
        result = _execute(name, s)
    except (UserError, *PATH_ERRORS) as e:
        print(f"yololab: error: {user_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("yololab: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"yololab: internal error (a bug in yololab {__version__}, not in your input): please report it with "
              "the command line and the traceback above", file=sys.stderr)
        return 1
    if s.json:
        if result is not None:
            print(json_text(result))
    elif result is not None and COMMANDS[name].printer is not None:
        COMMANDS[name].printer(result, s)
    return 0
