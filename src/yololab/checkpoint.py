"""Checkpoints: plain state_dicts plus JSON-able metadata, written atomically, loaded with weights_only."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .errors import UserError
from .nn import DetectionModel
from .utils.files import write_atomic

FORMAT = "yololab-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(UserError):
    """A file that is not a readable yololab checkpoint."""


def versions() -> dict[str, str]:
    """Versions recorded in every checkpoint."""
    return {"yololab": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def save_checkpoint(path: str | Path, model_state: dict[str, torch.Tensor], meta: dict[str, Any],
                    **extra: Any) -> Path:
    """Write ``{format, model, meta, **extra}`` to ``path`` atomically (temp file in the same folder + rename).

    ``meta`` must be JSON-able (model YAML dict, names, args, epoch, metrics); ``extra`` may hold more
    state_dicts and tensors (EMA, optimizer, scaler, RNG states) — never arbitrary Python objects.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "versions": versions(), "date": datetime.datetime.now().isoformat(timespec="seconds")}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model_state, "meta": meta, **extra}
    return write_atomic(path, lambda f: torch.save(payload, f), fsync=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: tensors and plain containers only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a yololab checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first_line = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path} is not a safe yololab checkpoint ({type(e).__name__}: {first_line})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a yololab checkpoint (no '{FORMAT}' marker)")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path, source: str | Path | None = None) -> DetectionModel:
    """Rebuild the DetectionModel described by a checkpoint's metadata and load its weights (``source``: the file a
    loaded ``ckpt`` came from, named in errors)."""
    where = str(source or "the checkpoint")
    if not isinstance(ckpt, dict):
        where, ckpt = str(ckpt), load_checkpoint(ckpt)
    meta = ckpt.get("meta")
    if not isinstance(meta, dict) or "model_yaml" not in meta or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{where} lacks its model weights or the model_yaml of its metadata")
    model = DetectionModel(meta["model_yaml"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # tensors of another architecture under the recorded one's names
        problems = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        first = problems[0][:300] if problems else str(e)[:300]
        raise CheckpointError(f"the weights in {where} do not fit the model its metadata describes "
                              f"({len(problems)} problems; first: {first})") from None
    if meta.get("names"):
        model.names = {int(k): v for k, v in meta["names"].items()}
    return model.float().eval()


def load_model(source: str | Path, nc: int | None = None):
    """A DetectionModel from a checkpoint ``.pt`` (its weights) or a model YAML (initial weights, ``nc`` classes)."""
    from .nn import DetectionModel

    if str(source).endswith(".pt"):
        return model_from_checkpoint(source)
    return DetectionModel(source, nc=nc)
