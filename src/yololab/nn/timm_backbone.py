"""Any timm model as a multi-output YOLO backbone (``features_only``), plus safe local checkpoint reading.

Weights are never downloaded: models are always created without timm's pretrained sources; a local
timm checkpoint can be given as ``weights`` and is read with ``torch.load(weights_only=True)`` or safetensors.

Documentation: ``docs/modules/repvit.md``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from .registry import FeatureInfo, register


def load_local_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from a local ``.safetensors`` or torch file (tensors only, no pickled objects).

    Checkpoints wrapping the weights under ``state_dict_ema``/``model_ema``/``state_dict``/``model`` are unwrapped.
    """
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return load_state_dict(str(path), use_ema=True, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ValueError(f"cannot read {path} as a tensors-only checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); pickled objects are refused") from None


def _create_timm_features(name: str, out_indices: tuple[int, ...], in_chans: int,
                          state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """``timm.create_model(features_only=True)``; a ``state_dict`` goes through timm's own adaptation, no network."""
    import timm

    if state_dict is None:
        return timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices,
                                 in_chans=in_chans)
    _check_covers_model(name, in_chans, state_dict)
    # The state_dict source has priority over every remote one; clearing them makes a download impossible.
    overlay = dict(state_dict=state_dict, file=None, url="", hf_hub_id=None, source=None)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, features_only=True,
                             out_indices=out_indices, in_chans=in_chans)


def _check_covers_model(name: str, in_chans: int, state_dict: dict[str, torch.Tensor]) -> None:
    """timm loads weights into feature models non-strictly; refuse checkpoints that leave layers at random init."""
    import timm

    with torch.device("meta"):
        body = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    missing = [k for k in body.state_dict() if k not in state_dict and not k.endswith("num_batches_tracked")]
    if missing:
        raise RuntimeError(f"the weights lack {len(missing)} tensors of timm model {name!r} (e.g. {missing[:3]}); "
                           "expected a timm state_dict of the same model")


def _indices(out_indices) -> tuple[int, ...]:
    indices = (out_indices,) if isinstance(out_indices, int) else out_indices
    if not isinstance(indices, (list, tuple)) or not indices or not all(isinstance(i, int) for i in indices):
        raise ValueError(f"TimmBackbone out_indices must be a non-empty list of ints, got {out_indices!r}")
    return tuple(indices)


@register(takes_c1=True, scales_c2=False)
class TimmBackbone(nn.Module):
    """A timm model with ``features_only=True``: YAML ``[name, out_indices, weights]``, e.g. ``[resnet18, [2, 3, 4]]``.

    Returns the list of feature maps at ``out_indices`` (timm's feature levels); its channels come from
    timm's ``feature_info``. ``weights`` is an optional local timm checkpoint of the same model; the file's
    width/depth scaling does not apply to it. Its BatchNorms keep timm's settings (eps 1e-5, momentum 0.1).
    """

    keeps_own_norms = True  # DetectionModel's BatchNorm defaults (eps 1e-3, momentum 0.03) are not applied

    def __init__(self, c1: int, name: str, out_indices: list[int] | tuple[int, ...],
                 weights: str | Path | None = None):
        super().__init__()
        state_dict = None if weights is None else load_local_state_dict(weights)
        try:
            self.model = _create_timm_features(str(name), _indices(out_indices), c1, state_dict)
        except RuntimeError as e:
            where = f" with weights {weights}" if weights is not None else ""
            raise RuntimeError(f"timm model {name!r}{where}: {' '.join(str(e).split())[:400]}") from None
        info = self.model.feature_info
        self.feature_info = [FeatureInfo(c, s) for c, s in zip(info.channels(), info.reduction(), strict=True)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)

    def fuse(self) -> "TimmBackbone":
        """Apply timm's own re-parameterization (modules with ``fuse``/``reparameterize``/``switch_to_deploy``).

        BatchNorms of plain timm modules (e.g. ResNet's ``conv1``/``bn1`` pairs) are left as they are.
        """
        from timm.utils import reparameterize_model

        reparameterize_model(self.model, inplace=True)
        return self
