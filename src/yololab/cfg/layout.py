"""Whose row semantics a model file follows: yololab's (Ultralytics') own, or the YOLOv5 / YOLOv7 repositories'.

The same module name means another signature in files brought from those code bases (YOLOv7's ``Conv`` rows are
``[c2, k, s, p, g, act]``, ours ``[c2, k, s, p, g, d, act]``). The parser builds each file with the modules of its
layout, and the trainer picks the family recipe from it. See docs/compatibility.md.
"""

from __future__ import annotations

from typing import Any

LAYOUTS = ("ultralytics", "yololab", "yolov5", "yolov7")
# Module names only YOLOv7's own files use: with ``anchors:`` and no ``scales``, any of them means the YOLOv7 layout.
YOLOV7_MODULES = ("IDetect", "IAuxDetect", "RepConv", "ReOrg", "DownC", "Shortcut", "SP", "MP", "SPPCSPC")


def model_layout(cfg: dict[str, Any]) -> tuple[str, str]:
    """``(layout, reason)`` of a model dict.

    ``yololab``: only by the ``layout: yololab`` key, which yololab's own files carry where a module name means
    another block elsewhere (our VoVGSCSP vs the Slim-neck authors' YOLOv8-port block of that name).
    ``ultralytics`` (Ultralytics' files and their forks'): other files with ``scales`` or without ``anchors``.
    ``yolov7``: ``anchors:`` without ``scales`` and a module only YOLOv7 uses (IDetect, RepConv, SPPCSPC, MP, ...).
    ``yolov5``: other files with ``anchors:`` and no ``scales`` (the YOLOv5 repository's). A top-level ``layout:``
    key overrides; a value outside ``LAYOUTS`` is a ``ValueError``.
    """
    given = cfg.get("layout")
    if given is not None:
        if given not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {given!r}")
        return given, "set by the file's 'layout:' key"
    if cfg.get("scales") or "anchors" not in cfg:
        return "ultralytics", "a file with 'scales' or without 'anchors' and no 'layout:' key"
    marks = [m for m in YOLOV7_MODULES if m in _module_names(cfg)]
    if marks:
        return "yolov7", f"'anchors:' without 'scales' and YOLOv7 modules ({', '.join(marks)})"
    return "yolov5", "'anchors:' without 'scales' and no YOLOv7-only module"


def _module_names(cfg: dict[str, Any]) -> set[str]:
    rows = list(cfg.get("backbone") or []) + list(cfg.get("head") or [])
    return {r[2] for r in rows if isinstance(r, list) and len(r) == 4 and isinstance(r[2], str)}


def yolov7_recipe(cfg: dict[str, Any]) -> str:
    """YOLOv7's recipe for a file of its layout: ``yolov7-p6`` for four anchor levels (P6 models), ``yolov7-tiny``
    for LeakyReLU rows (yolov7-tiny), ``yolov7-p5`` otherwise (hyp.scratch.p6 / tiny / p5)."""
    anchors = cfg.get("anchors")
    if isinstance(anchors, list) and len(anchors) == 4:
        return "yolov7-p6"
    rows = list(cfg.get("backbone") or []) + list(cfg.get("head") or [])
    leaky = any(isinstance(a, str) and a.replace(" ", "").startswith("nn.LeakyReLU(")
                for r in rows if isinstance(r, list) and len(r) == 4 and isinstance(r[3], list) for a in r[3])
    return "yolov7-tiny" if leaky else "yolov7-p5"
