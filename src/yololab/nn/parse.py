"""YAML model files -> ``nn.Module`` layers, with the Ultralytics row format and scaling semantics.

Files brought from other code bases keep the meaning their rows had there: ``model_layout`` tells an Ultralytics /
yololab file from the YOLOv5 and YOLOv7 repositories' own files (``cfg/layout.py``, docs/compatibility.md), and
activations written as constructor calls (``nn.LeakyReLU(0.1)``) are read from an allow-list, never evaluated.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from ..cfg.layout import model_layout as layout_of
from ..errors import UserError, yaml_error_text
from ..utils.files import read_text
from . import registry
from .registry import BuildContext

MODELS_DIR = Path(__file__).resolve().parent.parent / "cfg" / "models"
LOGGER = logging.getLogger(__name__)

# Activations a YAML may write as a constructor call, e.g. YOLOv7-tiny's ``nn.LeakyReLU(0.1)``.
ALLOWED_ACTIVATIONS = {"LeakyReLU": nn.LeakyReLU, "SiLU": nn.SiLU, "ReLU": nn.ReLU, "Hardswish": nn.Hardswish,
                       "Identity": nn.Identity}
_CALL = re.compile(r"^\s*[A-Za-z_][\w.]*\s*\(.*\)\s*$", re.S)


class ModelConfigError(UserError):
    """A model YAML that cannot be built; the message names the file and row."""


@dataclass
class Row:
    """One parsed YAML row after scaling: what the layer table prints."""

    index: int
    source: int | list[int]
    repeats: int
    module: str
    args: list
    params: int
    channels: int | list[int]


def scale_from_name(name: str) -> tuple[str, str | None]:
    """``yolov8n-p2.yaml`` -> (``yolov8-p2.yaml``, ``n``); names without a scale letter are unchanged."""
    path = Path(name)
    m = re.match(r"^(yolo(?:v)?\d+)([nslmx])(.*)$", path.stem)
    if not m:
        return name, None
    return str(path.with_name(m.group(1) + m.group(3) + path.suffix)), m.group(2)


def resolve_model_file(name: str | Path) -> tuple[Path, str | None]:
    """Find a model YAML on disk or among the shipped configs; also return the scale letter in its name."""
    name = str(name)
    if not name.endswith((".yaml", ".yml")):
        name += ".yaml"
    unified, scale = scale_from_name(name)
    for candidate in (Path(name), Path(unified), MODELS_DIR / Path(name).name, MODELS_DIR / Path(unified).name):
        if candidate.is_file():
            return candidate, scale
    shipped = ", ".join(sorted(p.name for p in MODELS_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"model config '{name}' not found on disk or among the shipped configs: {shipped}")


def load_model_yaml(source: str | Path | dict) -> dict:
    """Read a model YAML safely (no Python tags) and record the scale letter implied by its file name."""
    if isinstance(source, dict):
        return _checked_model_dict(dict(source), "model dict")
    path, scale = resolve_model_file(source)
    named_scale = scale is not None and Path(str(source)).name != path.name
    try:
        cfg = yaml.safe_load(read_text(path))
    except yaml.constructor.ConstructorError as e:
        raise ModelConfigError(f"{path}: unsafe or unknown YAML tag ({e.problem}); only plain YAML is allowed") from None
    except yaml.YAMLError as e:
        raise ModelConfigError(f"{path}: invalid YAML: {yaml_error_text(e)}") from None
    cfg = _checked_model_dict(cfg, str(path))
    if named_scale and not cfg.get("scales"):
        raise ModelConfigError(f"model config '{source}' not found, and {path.name} has no 'scales' for the letter "
                               f"'{scale}' to pick: give the file of that model itself (e.g. YOLOv7's own yolov7x.yaml)")
    cfg.setdefault("scale", scale)
    cfg["yaml_file"] = str(path)
    return cfg


def _checked_model_dict(cfg: Any, where: str) -> dict:
    """``cfg`` when its top-level keys have the types the parser reads, else a ModelConfigError naming the key."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("backbone"), list) or not isinstance(cfg.get("head"), list):
        raise ModelConfigError(f"{where}: a model YAML needs 'backbone' and 'head' lists")
    if "activation" in cfg:  # YOLOv5's file-wide default activation: building with SiLU instead would be silent
        raise ModelConfigError(f"{where}: a top-level 'activation: {cfg['activation']}' (a file-wide default "
                               "activation) is not supported yet; write the activation in each Conv row instead")
    if not cfg["backbone"] + cfg["head"]:
        raise ModelConfigError(f"{where}: 'backbone' and 'head' have no rows")
    for key in ("nc", "ch", "reg_max"):
        value = cfg.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
    for key in ("depth_multiple", "width_multiple"):
        value = cfg.get(key, 1.0)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
            raise ModelConfigError(f"{where}: {key} must be a positive number, got {value!r}")
    scales = cfg.get("scales")
    if scales is not None and not (isinstance(scales, dict) and all(
            isinstance(v, list) and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v)
            for v in scales.values())):
        raise ModelConfigError(f"{where}: scales must map each scale letter to [depth, width, max_channels], "
                               f"got {scales!r}")
    return cfg


def parse_activation(text: str) -> nn.Module:
    """``nn.LeakyReLU(0.1)`` -> that module, from ``ALLOWED_ACTIVATIONS`` with literal numeric arguments only.

    The text is parsed, never evaluated; anything else is a ``ModelConfigError`` naming it.
    """
    allowed = ", ".join(f"nn.{n}(...)" for n in ALLOWED_ACTIVATIONS)
    refusal = f"{text!r} is not an allowed activation: a YAML may write {allowed} with literal numeric arguments"
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ModelConfigError(refusal) from None
    func = getattr(node, "func", None)
    if not (isinstance(node, ast.Call) and isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id == "nn" and func.attr in ALLOWED_ACTIVATIONS):
        raise ModelConfigError(refusal)
    try:
        args = [_numeric_literal(a) for a in node.args]
        kwargs = {k.arg: _numeric_literal(k.value) for k in node.keywords if k.arg is not None}
        if len(kwargs) != len(node.keywords):
            raise ValueError("**kwargs")
        return ALLOWED_ACTIVATIONS[func.attr](*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise ModelConfigError(f"{refusal} ({e})") from None


def _numeric_literal(node: ast.AST) -> int | float:
    value = ast.literal_eval(node)  # constants and signed constants only; names and calls raise ValueError
    if not isinstance(value, (int, float)):
        raise ValueError(f"argument {value!r} is not a number")
    return value


def model_layout(cfg: dict) -> tuple[str, str]:
    """``(layout, reason)``: whose row semantics the file follows (``cfg.layout.model_layout``)."""
    try:
        return layout_of(cfg)
    except ValueError as e:
        raise ModelConfigError(f"{cfg.get('yaml_file', 'model')}: {e}") from None


def unused_rows(table: list[Row]) -> list[Row]:
    """Rows whose output never reaches the last row (the head): built, counted in params, never used."""
    reached, pending = set(), [len(table) - 1]
    while pending:
        i = pending.pop()
        if i < 0 or i in reached:
            continue
        reached.add(i)
        sources = table[i].source if isinstance(table[i].source, list) else [table[i].source]
        pending.extend(i - 1 if s == -1 else s for s in sources)
    return [row for row in table if row.index not in reached]


def _literal(value: Any, names: dict[str, Any]) -> Any:
    """YAML arg -> value: known names (``nc``) are substituted, other strings parsed as literals if possible."""
    if not isinstance(value, str):
        return value
    if value in names:
        return names[value]
    if _CALL.match(value):
        return parse_activation(value)
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _scales(cfg: dict) -> tuple[str | None, float, float, int]:
    scales = cfg.get("scales")
    scale = cfg.get("scale")
    if scales:
        if scale is None:
            scale = next(iter(scales))
        if scale not in scales:
            raise ModelConfigError(f"scale '{scale}' not in the file's scales {list(scales)}")
        depth, width, max_channels = scales[scale]
        return scale, float(depth), float(width), int(max_channels)
    return None, float(cfg.get("depth_multiple", 1.0)), float(cfg.get("width_multiple", 1.0)), 1 << 31


def _absolute_sources(source: Any, i: int) -> list[int]:
    items = source if isinstance(source, list) else [source]
    out = []
    for s in items:
        if not isinstance(s, int):
            raise ModelConfigError(f"'from' must be an int or a list of ints, got {s!r}")
        j = s if s >= 0 else i + s
        if not 0 <= j < i and not (i == 0 and s == -1):
            raise ModelConfigError(f"'from' index {s} points outside rows 0..{i - 1}")
        out.append(j)
    return out


def build_layers(cfg: dict, ch: int = 3) -> tuple[nn.Sequential, list[int], list[Row], BuildContext]:
    """Build the layers of a model dict; return (layers, saved row indices, layer table, context)."""
    scale, depth, width, max_channels = _scales(cfg)
    nc = int(cfg.get("nc", 80))
    rows_yaml = list(cfg["backbone"]) + list(cfg["head"])
    modern = any(isinstance(r, list) and len(r) == 4 and _is_modern(r[2]) for r in rows_yaml)
    layout, reason = model_layout(cfg)
    if layout != "ultralytics":
        LOGGER.info("%s: built with %s row semantics (%s)", cfg.get("yaml_file", "model"), layout, reason)
    ctx = BuildContext(scale, depth, width, max_channels, nc, int(cfg.get("reg_max", 16)), not modern, layout)
    names = {"nc": nc}
    if "anchors" in cfg:
        names["anchors"] = cfg["anchors"]
        rows_yaml = _anchor_head_rows(rows_yaml, cfg.get("yaml_file", "model"))
    channels: list[Any] = []
    layers, save, table = [], set(), []
    for i, row in enumerate(rows_yaml):
        where = f"{cfg.get('yaml_file', 'model')} row {i} {row}"
        try:
            layer, info = _build_row(i, row, channels, ch, ctx, names)
        except ModelConfigError as e:
            raise ModelConfigError(f"{where}: {e}") from None
        except (KeyError, TypeError, ValueError, AssertionError, RuntimeError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise ModelConfigError(f"{where}: {type(e).__name__}: {msg}") from None
        layers.append(layer)
        channels.append(info.channels)
        table.append(info)
        save.update(j for j in (info.source if isinstance(info.source, list) else [info.source]) if j != -1)
    return nn.Sequential(*layers), sorted(save), table, ctx


ANCHOR_HEADS = ("IDetect", "IAuxDetect")  # YOLOv7's anchor-based heads, which take [nc, anchors] as Detect does


def _anchor_head_rows(rows: list, where: str) -> list:
    """A YAML with top-level ``anchors:`` builds its ``Detect, [nc, anchors]`` rows as the anchor-based head."""
    heads = [i for i, r in enumerate(rows)
             if isinstance(r, list) and len(r) == 4 and r[2] in ("Detect", "AnchorDetect", *ANCHOR_HEADS)]
    usable = [i for i in heads if isinstance(rows[i][3], list) and len(rows[i][3]) == 2]
    if not heads or len(usable) != len(heads):
        raise ModelConfigError(f"{where}: has a top-level 'anchors:' but no head row "
                               "`[from, 1, Detect, [nc, anchors]]` to honour it (only the anchor-based Detect uses "
                               "anchors); remove 'anchors:' for the anchor-free head or give the head row its anchors")
    return [[*r[:2], "AnchorDetect", r[3]] if i in heads and r[2] == "Detect" else r for i, r in enumerate(rows)]


def _is_modern(name: Any) -> bool:
    try:
        return isinstance(name, str) and registry.get(name).modern_head
    except KeyError:
        return False


def _build_row(i: int, row: Any, channels: list, ch_in: int, ctx: BuildContext,
               names: dict) -> tuple[nn.Module, Row]:
    if not isinstance(row, list) or len(row) != 4:
        raise ModelConfigError("a row must be [from, repeats, module, args]")
    source, repeats, name, args = row
    if not isinstance(args, list):
        raise ModelConfigError("args must be a list")
    if not isinstance(repeats, int) or repeats < 1:
        raise ModelConfigError(f"repeats must be a positive int, got {repeats!r}")
    spec = registry.get(str(name), ctx.layout)
    sources = _absolute_sources(source, i)
    c_in = [channels[j] for j in sources] if i else [ch_in]
    c_in = c_in if isinstance(source, list) else c_in[0]
    n = ctx.depth_of(repeats)
    args = [_literal(a, names) for a in args]
    if spec.scales_c2:
        if not args or not isinstance(args[0], int):
            raise ModelConfigError(f"{name} expects an output width as its first arg, got {args}")
        args[0] = ctx.width_of(args[0])
    if spec.takes_c1:
        if isinstance(c_in, list):
            raise ModelConfigError(f"{name} takes one input but 'from' lists {len(c_in)}")
        args = [c_in, *args]
    if spec.takes_repeats:
        args.insert(2 if spec.takes_c1 else 1, n)
    if spec.prepare is not None:
        args = spec.prepare(args, c_in, ctx)
    try:
        if spec.takes_repeats or n == 1:
            layer = spec.cls(*args)
        else:
            layer = nn.Sequential(*(spec.cls(*args) for _ in range(n)))
    except TypeError as e:
        raise ModelConfigError(f"{name}{tuple(args)}: wrong arguments ({e})") from None
    params = sum(p.numel() for p in layer.parameters())
    out = spec.channels(c_in, args, layer)
    # -1 stays relative (the running tensor); other sources become absolute row indices
    routed = [-1 if s == -1 else j for s, j in zip(source if isinstance(source, list) else [source], sources)]
    layer.i, layer.f, layer.type = i, (routed if isinstance(source, list) else routed[0]), spec.name
    info = Row(i, layer.f, n, spec.name, list(row[3]), params, out)
    return layer, info
