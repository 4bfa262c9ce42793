"""Settings: the keys and defaults of ``default.yaml`` as one frozen, validated dataclass per command.

``settings("train", {"epochs": 3})`` merges a user's values over the defaults, refuses unknown keys (with a
suggestion) and wrong values (naming the key, the value and what is allowed), and returns a ``Settings`` instance:
attributes (``s.epochs``) and read-only mapping access (``s["epochs"]``), plus ``s.given``, the keys the user set.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from .schema import ConfigError, rule_for

CFG_DIR = Path(__file__).resolve().parent
SPECIAL_SECTIONS = ("shared", "output")  # not commands: keys several commands share, keys every command takes
SECTION_FIELDS = ("uses", "defaults")  # what a command's block says about keys it takes from elsewhere

__all__ = ["CFG_DIR", "ConfigError", "Settings", "check_keys", "command_defaults", "command_keys", "commands",
           "defaults", "given_keys", "parse_value", "settings"]


@lru_cache(maxsize=1)
def _layout() -> dict[str, dict[str, Any]]:
    """default.yaml's blocks, checked: every key written once, every ``uses`` entry a key written somewhere."""
    layout = yaml.safe_load((CFG_DIR / "default.yaml").read_text())
    owner: dict[str, str] = {}
    for section, block in layout.items():
        for key in block:
            if key in SECTION_FIELDS:
                continue
            if key in owner:
                raise ConfigError(f"default.yaml: '{key}' is written in both '{owner[key]}' and '{section}'")
            owner[key] = section
    for section, block in layout.items():
        for key in [*block.get("uses", []), *block.get("defaults", {})]:
            if key not in owner:
                raise ConfigError(f"default.yaml: '{section}' uses '{key}', which no block defines")
    return layout


@lru_cache(maxsize=1)
def defaults() -> dict[str, Any]:
    """Every key with its default value (one flat dict over all blocks)."""
    return {k: v for block in _layout().values() for k, v in block.items() if k not in SECTION_FIELDS}


def commands() -> list[str]:
    """The command names, in default.yaml's order."""
    return [s for s in _layout() if s not in SPECIAL_SECTIONS]


def command_keys(command: str) -> tuple[str, ...]:
    """The keys ``command`` accepts: its ``uses``, its own keys, then the output keys."""
    block = _layout()[command]
    own = [k for k in block if k not in SECTION_FIELDS]
    return tuple(dict.fromkeys([*block.get("uses", []), *own, *_layout()["output"]]))


def command_defaults(command: str) -> dict[str, Any]:
    """The defaults ``command`` sets differently from the block that defines the key (e.g. bench's batch 1)."""
    return dict(_layout()[command].get("defaults", {}))


class Settings(Mapping):
    """Base of the per-command settings dataclasses: read-only mapping access and the keys the user gave."""

    given: frozenset[str] = frozenset()

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def _keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` (validated like user values); ``given`` is kept."""
        typed = {k: rule_for(k, defaults()[k]).check(k, v) for k, v in changes.items()}
        new = dataclasses.replace(self, **typed)  # type: ignore[type-var]
        object.__setattr__(new, "given", self.given)
        return new

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.items())})"


@lru_cache(maxsize=None)
def settings_class(command: str) -> type[Settings]:
    """The frozen dataclass of ``command``'s settings (one field per accepted key)."""
    if command not in commands():
        raise ConfigError(f"no settings for '{command}'")
    fields = [(key, Any) for key in command_keys(command)]
    name = "".join(part.title() for part in command.split("-")) + "Settings"
    cls = dataclasses.make_dataclass(name, fields, bases=(Settings,), frozen=True, eq=True)
    cls.command = command
    return cls


def settings(command: str, overrides: Mapping[str, Any] | None = None, where: str = "",
             exclude: Iterable[str] = ()) -> Settings:
    """``command``'s typed settings: defaults updated with ``overrides``; unknown keys and bad values are errors.

    ``exclude``: keys of the command that this caller does not take (they keep their defaults).
    """
    keys = command_keys(command)
    overrides = dict(overrides or {})
    check_keys(overrides, [k for k in keys if k not in exclude], where or f"'yololab {command}'")
    base = {**defaults(), **command_defaults(command)}
    values = {k: base[k] for k in keys}
    values.update(overrides)
    typed = {k: rule_for(k, defaults()[k]).check(k, v) for k, v in values.items()}
    instance = settings_class(command)(**typed)
    object.__setattr__(instance, "given", frozenset(overrides))
    return instance


def parse_value(text: str) -> Any:
    """A command-line value: YAML scalars (``true``, ``0.5``, ``[1, 2]``); anything else stays a string."""
    if text in ("", "None", "none", "null"):
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float, list)) else text


def check_keys(keys: Iterable[str], allowed: Iterable[str], where: str = "") -> None:
    """Raise ConfigError for the first key not in ``allowed``, with close-name suggestions."""
    allowed = list(allowed)
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown setting '{key}'{' for ' + where if where else ''}.{hint} "
                              f"Valid: {', '.join(sorted(allowed))}")


def given_keys(values: Mapping[str, Any]) -> frozenset[str]:
    """The keys the user set: ``Settings.given``, or every key of a plain mapping (all of it was passed)."""
    return values.given if isinstance(values, Settings) else frozenset(values)
