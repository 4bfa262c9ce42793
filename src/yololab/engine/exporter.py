"""ONNX export of fused detection models and the onnxruntime equivalence check."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

DEFAULT_OPSET = 17


def export_onnx(model: nn.Module, file: str | Path, imgsz: int | tuple[int, int] = 640, *, batch: int = 1,
                opset: int = DEFAULT_OPSET, dynamic: bool = False, fuse: bool = True) -> Path:
    """Export a (by default fused copy of the) model in eval mode; output ``(B, 4 + nc, anchors)`` decoded."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    model = copy.deepcopy(model).float().eval()
    if fuse and callable(getattr(model, "fuse", None)):
        model.fuse()
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(batch, 3, h, w),), str(file), opset_version=opset, dynamo=False,
                          input_names=["images"], output_names=["output0"],
                          dynamic_axes=dynamic_axes if dynamic else None)
    return file


def onnx_max_abs_diff(file: str | Path, model: nn.Module, images: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime and PyTorch (eval mode) outputs on ``images``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: images.numpy().astype(np.float32)})[0]
    model = model.eval()
    with torch.no_grad():
        torch_out = model(images.float()).numpy()
    if onnx_out.shape != torch_out.shape:
        raise ValueError(f"ONNX output shape {onnx_out.shape} != PyTorch {torch_out.shape}")
    return float(np.abs(onnx_out - torch_out).max())
