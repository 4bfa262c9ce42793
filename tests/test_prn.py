"""PRN (partial residual) blocks and the CSP stage with its three fusion placements."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yololab.nn import DetectionModel
from yololab.nn.block import Bottleneck
from yololab.nn.prn import CSPPRN, CSPStage, PRNBlock


def _assert_every_param_gets_gradient(module: nn.Module, x: torch.Tensor) -> None:
    module.train()
    (module(x) ** 2).mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_prn_masked_residual_adds_identity_to_chosen_fraction_only():
    block = PRNBlock(16, 16, ratio=0.25).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        body, out = block.cv2(block.cv1(x)), block(x)
    assert block.shortcut_channels == 4
    torch.testing.assert_close(out[:, :4], body[:, :4] + x[:, :4])
    torch.testing.assert_close(out[:, 4:], body[:, 4:])


@pytest.mark.parametrize("c1, c2", [(8, 16), (16, 8)])
def test_prn_asymmetric_residual_needs_no_projection(c1, c2):
    block = PRNBlock(c1, c2, ratio=1.0).eval()
    x = torch.randn(1, c1, 6, 6)
    with torch.no_grad():
        body, out = block.cv2(block.cv1(x)), block(x)
    n = min(c1, c2)
    assert out.shape == (1, c2, 6, 6) and block.shortcut_channels == n
    assert sum(isinstance(m, nn.Conv2d) for m in block.modules()) == 2  # no projection conv
    torch.testing.assert_close(out[:, :n], body[:, :n] + x[:, :n])
    torch.testing.assert_close(out[:, n:], body[:, n:])


@pytest.mark.parametrize("ratio", [0, -0.5, 1.5])
def test_prn_rejects_ratio_outside_unit_interval(ratio):
    with pytest.raises(ValueError, match="ratio"):
        PRNBlock(8, 8, ratio=ratio)


# fusion -> (main-path transition in/out or None, post-concat transition in/out or None), for c2=32, e=0.25 (c_=8)
FUSION_CONVS = {
    "csp": ((8, 8), (16, 32)),
    "first": (None, (16, 32)),
    "last": ((8, 24), None),
}


def _conv_io(module: nn.Module) -> tuple[int, int] | None:
    return None if isinstance(module, nn.Identity) else (module.conv.in_channels, module.conv.out_channels)


@pytest.mark.parametrize("fusion", list(FUSION_CONVS))
def test_csp_fusion_channel_arithmetic(fusion):
    stage = CSPStage(16, 32, n=2, fusion=fusion, e=0.25)
    main_transition, fuse_transition = FUSION_CONVS[fusion]
    assert _conv_io(stage.cv1) == (16, 16)  # split into a cross and a main part of 8 channels each
    assert _conv_io(stage.cv2) == main_transition
    assert _conv_io(stage.cv3) == fuse_transition
    assert len(stage.m) == 2 and all(isinstance(b, Bottleneck) for b in stage.m)
    assert stage(torch.randn(2, 16, 8, 8)).shape == (2, 32, 8, 8)


def test_csp_fusion_last_passes_the_cross_part_straight_to_the_output():
    stage = CSPStage(16, 32, n=1, fusion="last").eval()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        cross = stage.cv1(x)[:, :16]
        torch.testing.assert_close(stage(x)[:, :16], cross)


def test_csp_fusion_placements_differ_only_in_transitions():
    params = {f: sum(p.numel() for p in CSPStage(32, 32, 1, f).parameters()) for f in FUSION_CONVS}
    # c_=16: "csp" has a 16->16 main transition on top of "first"; "last" swaps the 32->32 fusion conv for 16->16
    assert params["csp"] - params["first"] == 16 * 16 + 2 * 16
    assert params["first"] - params["last"] == (32 * 32 + 2 * 32) - (16 * 16 + 2 * 16)


def test_csp_rejects_unknown_fusion_and_degenerate_split():
    with pytest.raises(ValueError, match="fusion must be one of"):
        CSPStage(16, 16, fusion="middle")
    with pytest.raises(ValueError, match="part width"):
        CSPStage(16, 16, e=1.0)


def test_cspprn_builds_prn_blocks_from_yaml_with_depth_scaled_repeats():
    cfg = {"nc": 2, "scales": {"n": [0.33, 0.25, 1024]}, "scale": "n",
           "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 6, "CSPPRN", [64, 0.25, "first"]]],
           "head": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [64, 3, 2]], [[1, 2, 3], 1, "Detect", ["nc"]]]}
    stage = DetectionModel(cfg).model[1]
    assert isinstance(stage, CSPPRN) and stage.fusion == "first"
    assert len(stage.m) == 2  # round(6 * 0.33)
    assert all(isinstance(b, PRNBlock) and b.shortcut_channels == 2 for b in stage.m)  # c_ = 8, ratio 0.25


@pytest.mark.parametrize("module", [
    PRNBlock(8, 8), PRNBlock(8, 12, ratio=1.0),
    CSPStage(8, 16, 2, "csp"), CSPStage(8, 16, 2, "first"), CSPStage(8, 16, 2, "last"),
    CSPPRN(8, 16, 2, 0.5, "csp"),
], ids=lambda m: type(m).__name__)
def test_gradient_reaches_every_parameter(module):
    _assert_every_param_gets_gradient(module, torch.randn(2, 8, 8, 8))
