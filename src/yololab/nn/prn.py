"""Layer- and stage-level gradient-path designs: partial residual blocks (PRN) and the CSP stage.

From "Designing Network Design Strategies Through Gradient Path Analysis" (Wang, Liao, Yeh, 2022):

- layer level, PRN: a residual whose identity reaches only part of the output channels (masked
  residual), or joins layers of different widths without a projection (asymmetric residual), so
  the layers behind it receive a richer mix of gradients;
- stage level, CSP: only part of the stage input runs through the block stack; the fusion
  placement (where the 1x1 transitions sit around the concatenation) is selectable, as compared
  in the CSPNet paper.

Documentation: ``docs/modules/gradient-path.md``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .block import Bottleneck
from .conv import Conv
from .registry import register

CSP_FUSIONS = ("csp", "first", "last")


@register
class PRNBlock(nn.Module):
    """Bottleneck (1x1 then 3x3 by default) with a partial identity shortcut.

    The first ``round(ratio * min(c1, c2))`` input channels are added to the same output channels;
    the remaining output channels get no shortcut (masked residual). Input and output widths may
    differ: the shortcut is then added to a subset of channels with no projection conv (asymmetric
    residual). ``ratio=1`` with ``c1 == c2`` is the plain residual bottleneck.
    """

    def __init__(self, c1: int, c2: int, ratio: float = 0.5, e: float = 0.5, k: tuple[int, int] = (1, 3)):
        super().__init__()
        if not 0 < ratio <= 1:
            raise ValueError(f"PRNBlock ratio must be in (0, 1], got {ratio}")
        c_ = int(c2 * e)
        if c_ < 1:
            raise ValueError(f"PRNBlock hidden width int({c2} * {e}) must be at least 1")
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1)
        self.shortcut_channels = max(1, round(ratio * min(c1, c2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        n = self.shortcut_channels
        if n == y.shape[1]:
            return y + x[:, :n]
        return torch.cat((y[:, :n] + x[:, :n], y[:, n:]), 1)


class _CSPBase(nn.Module):
    """Split (one 1x1 conv, chunked), ``n`` blocks on the main part, fusion with the cross part.

    Attributes: ``cv1`` split conv, ``m`` blocks, ``cv2`` main-path transition, ``cv3`` transition
    after the concatenation (``nn.Identity`` where the fusion placement has none).
    """

    def __init__(self, c1: int, c2: int, n: int, fusion: str, e: float, make_block: Callable[[int], nn.Module]):
        super().__init__()
        if fusion not in CSP_FUSIONS:
            raise ValueError(f"{type(self).__name__} fusion must be one of {CSP_FUSIONS}, got {fusion!r}")
        c_ = int(c2 * e)
        if not 0 < c_ < c2:
            raise ValueError(f"{type(self).__name__} part width int({c2} * {e}) = {c_} must be in [1, {c2 - 1}]")
        self.c = c_
        self.cv1 = Conv(c1, 2 * c_, 1)
        self.m = nn.Sequential(*(make_block(c_) for _ in range(n)))
        if fusion == "csp":  # transition -> concat -> transition
            self.cv2, self.cv3 = Conv(c_, c_, 1), Conv(2 * c_, c2, 1)
        elif fusion == "first":  # concat -> transition
            self.cv2, self.cv3 = nn.Identity(), Conv(2 * c_, c2, 1)
        else:  # "last": transition -> concat; the main part's transition supplies c2 - c_ channels
            self.cv2, self.cv3 = Conv(c_, c2 - c_, 1), nn.Identity()
        self.fusion = fusion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cross, main = self.cv1(x).chunk(2, 1)
        return self.cv3(torch.cat((cross, self.cv2(self.m(main))), 1))


@register(takes_repeats=True)
class CSPStage(_CSPBase):
    """Cross-stage-partial stage of residual bottlenecks with a selectable ``fusion`` placement.

    ``"csp"``: transition on the main part, concat, transition (CSPNet); ``"first"``: concat, then
    one transition (fusion first); ``"last"``: transition on the main part, then concat, nothing
    after it (fusion last). Both parts have ``int(c2 * e)`` channels.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, fusion: str = "csp", shortcut: bool = True, e: float = 0.5):
        super().__init__(c1, c2, n, fusion, e, lambda c: Bottleneck(c, c, shortcut, k=(1, 3), e=1.0))


@register(takes_repeats=True)
class CSPPRN(_CSPBase):
    """CSP stage (see ``CSPStage``) whose blocks are partial-residual ``PRNBlock``s with shortcut ``ratio``."""

    def __init__(self, c1: int, c2: int, n: int = 1, ratio: float = 0.5, fusion: str = "csp", e: float = 0.5):
        super().__init__(c1, c2, n, fusion, e, lambda c: PRNBlock(c, c, ratio, e=1.0))
