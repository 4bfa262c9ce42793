"""DetectionModel: the layers built from a YAML plus routing, strides, initialisation, fusing and info."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .anchor_head import AnchorDetect
from .conv import fuse_modules
from .head import Detect
from .parse import ModelConfigError, Row, build_layers, load_model_yaml, model_layout, unused_rows


class DetectionModel(nn.Module):
    """A YOLO detector built from a model YAML (state_dict keys are ``model.<row>.<attr>``)."""

    def __init__(self, cfg: str | Path | dict = "yolov8n.yaml", nc: int | None = None, ch: int | None = None):
        super().__init__()
        self.yaml = load_model_yaml(cfg)
        if nc is not None:
            self.yaml["nc"] = int(nc)
        ch = int(ch or self.yaml.get("ch", 3))
        self.yaml["ch"] = ch
        self.model, self.save, self.table, self.ctx = build_layers(self.yaml, ch)
        self.layout = model_layout(self.yaml)
        for row in self.unused_rows():
            warnings.warn(f"{self.yaml.get('yaml_file', 'model')}: {describe_unused(row)}", stacklevel=2)
        self.nc = int(self.yaml.get("nc", 80))
        self.names = {i: str(i) for i in range(self.nc)}
        self.stride = self._compute_strides(ch)
        self._init_weights()

    @property
    def head(self) -> nn.Module:
        return self.model[-1]

    def forward(self, x: torch.Tensor):
        outputs: list = []
        for layer in self.model:
            x = layer(_gather(layer.f, x, outputs))
            outputs.append(x if layer.i in self.save else None)
        return x

    def _compute_strides(self, ch: int, size: int = 256) -> torch.Tensor:
        """Run a blank image through the body (eval mode) and read the strides of the head's inputs."""
        head = self.head
        outputs: list = []
        x = torch.zeros(1, ch, size, size)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for layer in self.model[:-1]:
                    try:
                        x = layer(_gather(layer.f, x, outputs))
                    except RuntimeError as e:
                        raise ModelConfigError(f"{self.yaml.get('yaml_file', 'model')} row {layer.i} "
                                               f"({layer.type}): fails on a test input: {str(e).splitlines()[0]}") from None
                    outputs.append(x)
        finally:
            self.train(was_training)
        feats = _gather(head.f, x, outputs)
        feats = feats if isinstance(feats, list) else [feats]
        strides = torch.tensor([size / f.shape[-2] for f in feats])
        if isinstance(head, Detect):
            head.stride.copy_(strides)
        elif isinstance(head, AnchorDetect):
            head.set_strides(strides)
            return head.stride.clone()  # IAuxDetect: the lead levels only
        return strides

    def _init_weights(self) -> None:
        own = {id(n) for m in self.modules() if getattr(m, "keeps_own_norms", False) for n in m.modules()}
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d) and id(m) not in own:
                m.eps, m.momentum = 1e-3, 0.03
            elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
                m.inplace = True
        if isinstance(self.head, (Detect, AnchorDetect)):
            self.head.init_biases()

    def fuse(self) -> "DetectionModel":
        """Fold every foldable BatchNorm / re-parameterizable branch, in place; returns self."""
        fuse_modules(self)
        return self

    def info(self) -> list[Row]:
        """Per-row layer table (index, from, repeats, module, args, params, output channels)."""
        for row, layer in zip(self.table, self.model):
            row.params = sum(p.numel() for p in layer.parameters())
        return self.table

    def reference_differences(self) -> list[dict]:
        """Rows whose reference code holds another parameter count than this model (layers its forward never uses,
        repeats it ignores): ``{"index", "module", "extra_params", "why"}`` per row, ``extra_params`` = theirs - ours."""
        out = []
        for row, layer in zip(self.table, self.model):
            blocks = [m for m in layer.modules() if callable(getattr(m, "reference_extra_params", None))]
            for extra, why in (b.reference_extra_params() for b in blocks):
                if extra:
                    out.append({"index": row.index, "module": row.module, "extra_params": extra, "why": why})
        return out

    def unused_rows(self) -> list[Row]:
        """Rows built from the file whose output never reaches the head (absent from the forward pass)."""
        return unused_rows(self.info())


def describe_unused(row: Row) -> str:
    """``row 22 VoVGSCSP (234,368 params) feeds nothing``."""
    return f"row {row.index} {row.module} ({row.params:,} params) feeds nothing"


def _gather(source: int | list[int], x, outputs: list):
    """The input of a row: -1 is the running tensor, other indices are saved row outputs."""
    if isinstance(source, int):
        return x if source == -1 else outputs[source]
    return [x if j == -1 else outputs[j] for j in source]

