"""Settings: the defaults in ``default.yaml`` and strict merging of user overrides."""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import yaml

CFG_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """An unknown or invalid setting given by the user."""


@lru_cache(maxsize=1)
def defaults() -> dict[str, Any]:
    """All settings with their default values."""
    return yaml.safe_load((CFG_DIR / "default.yaml").read_text())


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


class Settings(dict):
    """Merged settings that remember which keys the user gave (``given``); the others hold defaults."""

    def __init__(self, values: dict[str, Any], given: Iterable[str]):
        super().__init__(values)
        self.given = frozenset(given)


def given_keys(settings: dict[str, Any]) -> frozenset[str]:
    """The keys the user set: ``Settings.given``, or every key of a plain dict (all of it was passed)."""
    return getattr(settings, "given", frozenset(settings))


def merge(overrides: dict[str, Any], allowed: Iterable[str] | None = None, where: str = "") -> Settings:
    """Defaults (restricted to ``allowed``) updated with ``overrides``; unknown keys are errors."""
    base = defaults()
    allowed = list(allowed) if allowed is not None else list(base)
    check_keys(overrides, allowed, where)
    merged = {k: base.get(k) for k in allowed}
    merged.update(overrides)
    return Settings(merged, overrides)
