"""Checks shared by the module and export tests."""

from __future__ import annotations

import torch
from torch import nn


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
