"""RepViT backbone ("RepViT: Revisiting Mobile CNN From ViT Perspective", Wang et al., CVPR 2024).

A MobileNetV3-like CNN reorganised after ViT blocks: a re-parameterizable depthwise token mixer
(``RepVGGDW``), squeeze-excite on every other block, and a 1x1 channel-mixer FFN with expansion 2.
``fuse()`` folds every BatchNorm of the backbone and collapses each ``RepVGGDW`` into one 3x3
depthwise convolution with bias. The YAML module ``RepViT`` returns the P3/P4/P5 feature maps.

Documentation: ``docs/modules/repvit.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .conv import Conv, fuse_conv_bn, fuse_modules
from .registry import BuildContext, FeatureInfo, make_divisible, register
from .timm_backbone import load_local_state_dict


@dataclass(frozen=True)
class RepViTSpec:
    """Published widths (strides 4/8/16/32) and regular blocks per stage (pre-blocks not counted)."""

    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]


VARIANTS: dict[str, RepViTSpec] = {
    "m0_9": RepViTSpec((48, 96, 192, 384), (2, 2, 14, 2)),
    "m1_0": RepViTSpec((56, 112, 224, 448), (2, 2, 14, 2)),
    "m1_1": RepViTSpec((64, 128, 256, 512), (2, 2, 12, 2)),
    "m1_5": RepViTSpec((64, 128, 256, 512), (4, 4, 24, 4)),
    "m2_3": RepViTSpec((80, 160, 320, 640), (6, 6, 34, 2)),
}

STAGE_STRIDES = (4, 8, 16, 32)


def repvit_stages(variant: str, depth: float = 1.0, width: float = 1.0) -> RepViTSpec:
    """Stage widths and depths of a variant (``m0_9`` or ``m0.9``) scaled by ``width`` and ``depth``.

    Widths become ``ceil(c * width / 8) * 8``, depths ``max(round(d * depth), 1)``; 1.0 keeps the paper's values.
    """
    key = str(variant).lower().replace(".", "_").removeprefix("repvit_")
    if key not in VARIANTS:
        raise ValueError(f"unknown RepViT variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if width <= 0 or depth <= 0:
        raise ValueError(f"RepViT width and depth multiples must be positive, got width={width}, depth={depth}")
    base = VARIANTS[key]
    widths = tuple(base.widths if width == 1.0 else (make_divisible(c * width, 8) for c in base.widths))
    depths = tuple(base.depths if depth == 1.0 else (max(round(d * depth), 1) for d in base.depths))
    return RepViTSpec(widths, depths)


class ConvBN(Conv):
    """Bias-free convolution + BatchNorm, no activation (``Conv2d_BN`` in the paper's code)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, bn_weight_init: float = 1.0):
        super().__init__(c1, c2, k, s, g=g, act=False)
        nn.init.constant_(self.bn.weight, bn_weight_init)


class RepVGGDW(nn.Module):
    """Token mixer ``BN(DW3x3-BN(x) + DW1x1(x) + x)``; ``fuse()`` turns it into one 3x3 depthwise conv with bias."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = ConvBN(c, c, 3, 1, g=c)
        self.conv1x1 = nn.Conv2d(c, c, 1, groups=c, bias=True)
        self.bn = nn.BatchNorm2d(c)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return self.bn(self.conv(x) + self.conv1x1(x) + x)

    @torch.no_grad()
    def fuse(self) -> None:
        """Sum the three branches into one 3x3 kernel, then fold the outer BatchNorm (eval-time equivalent)."""
        if self.fused is not None:
            return
        self.conv.fuse()
        conv3x3 = self.conv.conv
        identity = torch.zeros_like(conv3x3.weight)
        identity[:, 0, 1, 1] = 1.0
        merged = nn.Conv2d(conv3x3.in_channels, conv3x3.out_channels, 3, 1, 1, groups=conv3x3.groups, bias=True)
        merged = merged.to(conv3x3.weight.device, conv3x3.weight.dtype)
        merged.weight.copy_(conv3x3.weight + F.pad(self.conv1x1.weight, [1, 1, 1, 1]) + identity)
        merged.bias.copy_(conv3x3.bias + self.conv1x1.bias)
        self.fused = fuse_conv_bn(merged, self.bn)
        del self.conv, self.conv1x1, self.bn


class SqueezeExcite(nn.Module):
    """Channel attention: global mean -> 1x1 conv to c/4 (ceil to 8) -> ReLU -> 1x1 conv -> sigmoid gate."""

    def __init__(self, c: int, ratio: float = 0.25):
        super().__init__()
        hidden = make_divisible(c * ratio, 8)
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


class ConvFFN(nn.Module):
    """Channel mixer: 1x1 ConvBN to 2c, GELU, 1x1 ConvBN back to c (last BN zero-initialised)."""

    def __init__(self, c: int, expansion: int = 2):
        super().__init__()
        self.conv1 = ConvBN(c, c * expansion)
        self.act = nn.GELU()
        self.conv2 = ConvBN(c * expansion, c, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class RepViTBlock(nn.Module):
    """Stride-1 block: RepVGGDW token mixer (+ optional SE), then a residual ConvFFN channel mixer."""

    def __init__(self, c: int, se: bool):
        super().__init__()
        self.mixer = RepVGGDW(c)
        self.se = SqueezeExcite(c) if se else nn.Identity()
        self.ffn = ConvFFN(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.mixer(x))
        return x + self.ffn(x)


class RepViTDownsample(nn.Module):
    """Stride-2 unit: pre-block (no SE), 3x3 s2 depthwise ConvBN, 1x1 ConvBN c1 -> c2, residual ConvFFN."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.pre_block = RepViTBlock(c1, se=False)
        self.spatial = ConvBN(c1, c1, 3, 2, g=c1)
        self.channel = ConvBN(c1, c2)
        self.ffn = ConvFFN(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel(self.spatial(self.pre_block(x)))
        return x + self.ffn(x)


class RepViTStem(nn.Module):
    """Two 3x3 stride-2 ConvBNs with a GELU between them (overall stride 4, no activation at the end)."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.conv1 = ConvBN(c1, c2 // 2, 3, 2)
        self.act = nn.GELU()
        self.conv2 = ConvBN(c2 // 2, c2, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class RepViTStage(nn.Module):
    """Optional downsample unit, then ``depth`` blocks with SE on the 1st, 3rd, 5th... block."""

    def __init__(self, c1: int, c2: int, depth: int, downsample: bool):
        super().__init__()
        self.downsample = RepViTDownsample(c1, c2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*(RepViTBlock(c2, se=j % 2 == 0) for j in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def _check_out_indices(out_indices) -> tuple[int, ...]:
    indices = tuple(out_indices) if isinstance(out_indices, (list, tuple)) else (out_indices,)
    if not indices or list(indices) != sorted(set(indices)) or not all(isinstance(i, int) and 0 <= i <= 3
                                                                       for i in indices):
        raise ValueError(f"RepViT out_indices must be increasing stage indices in 0..3 (strides 4/8/16/32), "
                         f"got {out_indices!r}")
    return indices


def _repvit_yaml_scaling(args: list, c_in: int, ctx: BuildContext) -> list:
    """YAML ``[variant, ref_depth, ref_width, out_indices]`` -> ``RepViT(c1, variant, depth, width, out_indices)``.

    The variant is built as published when the file's scale has depth ``ref_depth`` and width ``ref_width``;
    other scales multiply the backbone's depths/widths by ``ctx.depth / ref_depth`` and ``ctx.width / ref_width``.
    A missing or null reference disables that scaling (the published value at every scale).
    """
    c1, variant, *rest = args
    if len(rest) > 3:
        raise ValueError(f"RepViT takes [variant, ref_depth, ref_width, out_indices], got {args[1:]}")
    ref_depth, ref_width, out_indices = rest + [None, None, (1, 2, 3)][len(rest):]
    for name, value in (("ref_depth", ref_depth), ("ref_width", ref_width)):
        if value is not None and (not isinstance(value, (int, float)) or value <= 0):
            raise ValueError(f"RepViT {name} must be a positive number or null, got {value!r}")
    depth = 1.0 if ref_depth is None else ctx.depth / ref_depth
    width = 1.0 if ref_width is None else ctx.width / ref_width
    return [c1, variant, depth, width, out_indices]


@register(takes_c1=True, scales_c2=False, prepare=_repvit_yaml_scaling)
class RepViT(nn.Module):
    """RepViT backbone returning the feature maps of stages ``out_indices`` (default P3/P4/P5).

    ``depth`` and ``width`` multiply the variant's blocks per stage and stage widths (1.0 = as published);
    stage ``i`` has stride ``4 * 2**i``. YAML: ``[-1, 1, RepViT, [m0_9]]`` (published variant at every scale)
    or ``[m0_9, 0.33, 0.50]`` (published at the scale with depth 0.33 / width 0.50, proportional at others).
    """

    def __init__(self, c1: int = 3, variant: str = "m0_9", depth: float = 1.0, width: float = 1.0,
                 out_indices: tuple[int, ...] | list[int] = (1, 2, 3)):
        super().__init__()
        self.spec = repvit_stages(variant, depth, width)
        self.out_indices = _check_out_indices(out_indices)
        self.feature_info = [FeatureInfo(self.spec.widths[i], STAGE_STRIDES[i]) for i in self.out_indices]
        widths, depths = self.spec.widths, self.spec.depths
        self.stem = RepViTStem(c1, widths[0])
        self.stages = nn.ModuleList(
            RepViTStage(widths[max(i - 1, 0)], widths[i], depths[i], downsample=i > 0)
            for i in range(self.out_indices[-1] + 1)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                features.append(x)
        return features

    def fuse(self) -> "RepViT":
        """Fold every BatchNorm and re-parameterize every RepVGGDW, in place (use in eval mode)."""
        fuse_modules(self)
        return self


# timm RepViT (``repvit_m*``, non-legacy) attribute names -> ours, applied in order to every key.
_TIMM_RENAMES = (
    (re.compile(r"^stages_(\d+)\."), r"stages.\1."),  # features_only checkpoints flatten ``stages.N``
    (re.compile(r"\.c\.weight$"), ".conv.weight"),
    (re.compile(r"\.token_mixer\.conv1\."), ".mixer.conv1x1."),
    (re.compile(r"\.token_mixer\."), ".mixer."),
    (re.compile(r"\.channel_mixer\."), ".ffn."),
    (re.compile(r"\.spatial_downsample\."), ".spatial."),
    (re.compile(r"\.channel_downsample\."), ".channel."),
)


def timm_repvit_to_yololab(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``repvit_m*`` state_dict (full or ``features_only``) to our RepViT keys; drops the classifier."""
    if any(k.startswith("features.") for k in state_dict):
        raise ValueError("this looks like an original THU-MIG RepViT checkpoint ('features.*' keys); load it into "
                         "timm's repvit model first and save that model's state_dict")
    if any(".token_mixer.conv1.c." in k for k in state_dict):
        raise ValueError("legacy timm RepViT (repvit_m1/m2/m3) weights are not supported; use repvit_m0_9 ... m2_3")
    out = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            continue
        for pattern, repl in _TIMM_RENAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def load_timm_repvit(model: nn.Module, weights: str | Path | dict[str, torch.Tensor]) -> RepViT:
    """Load timm ``repvit_m*`` ImageNet weights (a local file or a state_dict) into a RepViT; returns that backbone.

    ``model`` is a RepViT or a model containing exactly one (e.g. a DetectionModel). Loaded BatchNorms get
    timm's eps (1e-5) back, since the statistics were trained with it. Stages the backbone does not build
    (``out_indices`` ending early) are skipped; anything else missing or mismatched raises.
    """
    backbone = _single_repvit(model)
    if not isinstance(weights, dict):
        weights = load_local_state_dict(weights)
    state = timm_repvit_to_yololab(weights)
    built_stages = len(backbone.stages)
    state = {k: v for k, v in state.items() if not _stage_beyond(k, built_stages)}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"weights do not match RepViT {_describe(backbone)}: {len(missing)} missing keys "
                         f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]} (is it a repvit_m* "
                         "checkpoint of the same variant?)")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"weights have other shapes than RepViT {_describe(backbone)} (another variant, or the "
                         f"file's width scaling is active?): {wrong[:3]}")
    backbone.load_state_dict(state)
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-5
    return backbone


def _single_repvit(model: nn.Module) -> RepViT:
    found = [m for m in model.modules() if isinstance(m, RepViT)]
    if len(found) != 1:
        raise ValueError(f"expected exactly one RepViT in {type(model).__name__}, found {len(found)}")
    if any(isinstance(m, Conv) and m.bn is None for m in found[0].modules()):
        raise ValueError("this RepViT is already fused; load weights before calling fuse()")
    return found[0]


def _stage_beyond(key: str, built_stages: int) -> bool:
    m = re.match(r"^stages\.(\d+)\.", key)
    return m is not None and int(m.group(1)) >= built_stages


def _describe(backbone: RepViT) -> str:
    return f"(widths {list(backbone.spec.widths)}, depths {list(backbone.spec.depths)})"
