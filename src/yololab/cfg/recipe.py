"""Family training recipes: settings files next to ``default.yaml`` that apply to a whole model family."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from .layout import model_layout, yolov7_recipe

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def recipe_name(model_yaml: dict[str, Any]) -> str | None:
    """The recipe of a model's family: for YOLOv7's own files (``cfg.layout``) ``yolov7-tiny`` / ``-p5`` / ``-p6``,
    for other anchor-based models (a top-level ``anchors:``) ``yolov5-anchor``, None for the anchor-free families,
    which train with ``default.yaml``."""
    if model_yaml.get("anchors") is None:
        return None
    return yolov7_recipe(model_yaml) if model_layout(model_yaml)[0] == "yolov7" else "yolov5-anchor"


def family_overrides(model_yaml: dict[str, Any], given: Iterable[str]) -> dict[str, Any]:
    """The settings a model's family recipe gives for the keys the user did not set (``given``): the one precedence
    rule (a key the user sets wins, then the family's recipe, then default.yaml). Empty for anchor-free families."""
    name = recipe_name(model_yaml)
    return {} if name is None else {k: v for k, v in load_recipe(name).items() if k not in set(given)}


def load_recipe(name: str) -> dict[str, Any]:
    """The settings of recipe ``name`` (``cfg/recipes/<name>.yaml``)."""
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"no training recipe '{name}' in {RECIPES_DIR} (known: {known})")
    return yaml.safe_load(path.read_text())
