"""Dataset description files: Ultralytics-style ``data.yaml`` or the built-in ``synthetic`` set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError, yaml_error_text
from ..utils.files import read_text
from .image import is_image_file
from .synthetic import synthetic_dataset


class DataConfigError(UserError):
    """A data.yaml that cannot be used, with the reason."""


@dataclass
class DataConfig:
    """A dataset: its root, image files per split, class names and the COCO val ground truth if shipped."""

    root: Path
    train: list[Path]
    val: list[Path]
    test: list[Path]
    names: dict[int, str]
    nc: int
    yaml_file: Path | None = None
    coco_val_json: Path | None = None

    def split(self, name: str) -> list[Path]:
        """Image files of ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise UserError(f"unknown split '{name}', expected train, val or test")
        return getattr(self, name)


def load_data_config(data: str | Path) -> DataConfig:
    """Read a ``data.yaml`` (or generate and read the built-in set for ``"synthetic"``).

    ``path`` is resolved against the yaml file's folder; ``train``/``val``/``test`` may each be a folder
    (searched recursively for images), a ``.txt`` list of image paths (relative ones resolved against the
    list's folder) or a list of those; ``names`` is a list or an ``{id: name}`` dict.
    """
    if str(data) == "synthetic":
        data = synthetic_dataset()
    yaml_file = Path(data).expanduser().resolve()
    if not yaml_file.is_file():
        raise FileNotFoundError(f"data file not found: {data}")
    try:
        raw = yaml.safe_load(read_text(yaml_file))
    except yaml.YAMLError as e:
        raise DataConfigError(f"{yaml_file}: not valid YAML ({yaml_error_text(e)})") from None
    if not isinstance(raw, dict):
        raise DataConfigError(f"{yaml_file}: expected a mapping with path/train/val/names")
    if raw.get("names") in (None, "", [], {}):
        raise DataConfigError(f"{yaml_file}: missing 'names'")
    if not any(raw.get(s) for s in ("train", "val", "test")):
        raise DataConfigError(f"{yaml_file}: no split given (train, val or test)")
    root = Path(raw.get("path") or ".").expanduser()
    root = (root if root.is_absolute() else yaml_file.parent / root).resolve()
    names = _parse_names(raw["names"], yaml_file)
    if raw.get("nc") is not None and int(raw["nc"]) != len(names):
        raise DataConfigError(f"{yaml_file}: nc is {raw['nc']} but {len(names)} names are given")
    splits = {s: _resolve_split(raw[s], root, f"{yaml_file}: {s}") if raw.get(s) else []
              for s in ("train", "val", "test")}
    return DataConfig(root=root, names=names, nc=len(names), yaml_file=yaml_file,
                      coco_val_json=_find_coco_val_json(raw, root), **splits)


def _parse_names(names: Any, where: Path) -> dict[int, str]:
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        try:
            parsed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataConfigError(f"{where}: names keys must be class ids 0..nc-1") from None
        if sorted(parsed) != list(range(len(parsed))):
            raise DataConfigError(f"{where}: names ids must be 0..{len(parsed) - 1} without gaps, got {sorted(parsed)}")
        return dict(sorted(parsed.items()))
    raise DataConfigError(f"{where}: names must be a list or an {{id: name}} mapping")


def _resolve_split(entry: str | list, root: Path, where: str) -> list[Path]:
    """Image files of one split entry (folder, .txt list, single image, or a list of those)."""
    entries = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for item in entries:
        path = Path(str(item)).expanduser()
        path = path if path.is_absolute() else root / path
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                raise DataConfigError(f"{where}: no images in folder {path}")
            files += found
        elif path.suffix == ".txt" and path.is_file():
            files += read_list_file(path)
        elif path.is_file() and is_image_file(path):
            files.append(path)
        else:
            raise DataConfigError(f"{where}: {path} is not a folder, a .txt image list or an image")
    return files


def read_list_file(path: Path, must_exist: bool = False) -> list[Path]:
    """A ``.txt`` with one file path per line (blank and ``#`` lines skipped); relative paths are taken from the
    list's folder. With ``must_exist`` a missing file is an error naming its line (datasets instead count missing
    images as data problems)."""
    files = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            p = (p if p.is_absolute() else path.parent / p).resolve()
            if must_exist and not p.is_file():
                raise FileNotFoundError(f"{path} line {n}: file not found: {line}")
            files.append(p)
    return files


def _find_coco_val_json(raw: dict, root: Path) -> Path | None:
    """``coco_val_json`` from the yaml, else ``annotations/instances_<val folder>.json`` or ``instances_val.json``."""
    if raw.get("coco_val_json"):
        path = Path(raw["coco_val_json"]).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise DataConfigError(f"coco_val_json not found: {path}")
        return path
    val = raw.get("val") or "val"
    val = val[0] if isinstance(val, list) else val
    for name in dict.fromkeys((Path(str(val)).stem, "val")):
        path = root / "annotations" / f"instances_{name}.json"
        if path.is_file():
            return path
    return None
