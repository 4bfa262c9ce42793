"""Checks shared by the module and export tests."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from yololab.engine.exporter import export_onnx, onnx_max_abs_diff


def randomize_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def assert_every_parameter_has_gradient(model: nn.Module, outputs) -> None:
    """Backpropagate a random projection of the outputs; every trainable parameter must get a gradient."""
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    sum((o * torch.randn_like(o)).sum() for o in outputs).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"parameters without gradient (dead layers?): {missing}"


def assert_fuses_and_exports(model: nn.Module, tmp_path: Path, imgsz: int = 96
                             ) -> tuple[torch.Tensor, nn.Module, Path]:
    """Eval outputs of a fused copy and of its ONNX export equal the model's (1e-5 of the output scale).

    Returns the model's output on a random image, the fused copy and the ONNX file, for further checks.
    """
    torch.manual_seed(0)
    model = randomize_batchnorms(model).eval()
    fused = copy.deepcopy(model).fuse()
    images = torch.rand(1, 3, imgsz, imgsz)
    with torch.no_grad():
        y, y_fused = model(images), fused(images)
    scale = y.abs().max().item()
    assert (y - y_fused).abs().max() <= 1e-5 * scale
    file = export_onnx(model, tmp_path / "model.onnx", imgsz=imgsz)
    assert onnx_max_abs_diff(file, fused, images) <= 1e-5 * scale
    return y, fused, file
