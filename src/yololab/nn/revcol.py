"""RevCol: Reversible Column Networks (Cai et al., ICLR 2023) as a YOLO backbone.

A stem (stride 4) feeds N columns of 4 levels (strides 4/8/16/32). Level ``l`` of column ``k`` is

    c_l(k) = alpha_l * c_l(k-1) + F_l(Down(c_{l-1}(k)) + Up(c_{l+1}(k-1)))

so the previous column's state can be rebuilt from the later one: ``c_l(k-1) = (c_l(k) - F_l) / alpha_l``.
With ``save_memory=True`` the whole column stack runs as one autograd function that keeps only the stem
output and the LAST column's states, and rebuilds every earlier state column by column in backward while
recomputing F_l (same RNG state, same autocast settings, BatchNorm statistics not updated twice).
Activation memory is then nearly independent of the number of columns. Both modes give the same gradients
up to round-off; the division by alpha amplifies round-off with every column rebuilt, so ``anchor_every=m``
also keeps the exact states of every m-th column (4 maps each) and rebuilds at most m-1 columns from each.

The backbone is one YAML row returning ``[P3, P4, P5]`` (levels 1-3 of the last column); pick maps with
``Index``. YAML args: ``[channels, layers, columns, block, kernel, drop_path, save_memory, anchor_every]`` with
``channels``/``layers`` nominal (scaled by the file's width/depth like any YOLO width), or
``[T, ...]`` / ``[S, ...]`` for the paper's unscaled RevCol-T/S.

Documentation: ``docs/modules/revcol.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from .block import C2f
from .registry import BuildContext, FeatureInfo, register

# channels C0..C3, blocks per level, columns (megvii-research/RevCol model factory functions)
REVCOL_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "T": ((64, 128, 256, 512), (2, 2, 4, 2), 4),
    "S": ((64, 128, 256, 512), (2, 2, 4, 2), 8),
}
LEVEL_BLOCKS = ("convnext", "c2f")
ALPHA_MIN = 1e-3  # |alpha| floor that keeps the inverse (c - F) / alpha stable


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's residual branch with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class ConvNeXtBlock(nn.Module):
    """Depthwise kxk conv, LayerNorm, 4x MLP with GELU, layer scale, drop path, residual."""

    def __init__(self, c: int, k: int = 3, drop_path: float = 0.0, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, k, padding=k // 2, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), layer_scale))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(self.act(self.pwconv1(y))) * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class Down(nn.Sequential):
    """2x2 stride-2 convolution + LayerNorm: level l-1 -> level l of the same column."""

    def __init__(self, c1: int, c2: int):
        super().__init__(nn.Conv2d(c1, c2, 2, 2), LayerNorm2d(c2, eps=1e-6))


class Up(nn.Module):
    """1x1 projection + LayerNorm + nearest 2x upsampling: level l+1 of the previous column -> level l."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.proj = nn.Conv2d(c1, c2, 1)
        self.norm = LayerNorm2d(c2, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.norm(self.proj(x)), scale_factor=2.0, mode="nearest")


class RevLevel(nn.Module):
    """One level of one column: ``alpha * prev + body(Down(lower) + Up(upper_prev))``.

    Level 0 takes the stem output as ``lower`` (no Down); the top level has no Up; the first column
    has neither Up nor alpha (there is no previous state).
    """

    def __init__(self, c: int, c_lower: int | None, c_upper: int | None, body: nn.Module, first_column: bool):
        super().__init__()
        self.down = Down(c_lower, c) if c_lower is not None else None
        self.up = Up(c_upper, c) if c_upper is not None and not first_column else None
        self.body = body
        self.alpha = None if first_column else nn.Parameter(torch.full((1, c, 1, 1), 0.5))

    def residual(self, lower: torch.Tensor, upper_prev: torch.Tensor | None) -> torch.Tensor:
        """F_l of the fused inputs."""
        x = self.down(lower) if self.down is not None else lower
        if self.up is not None:
            x = x + self.up(upper_prev)
        return self.body(x)

    def combine(self, residual: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """The new state from F_l and the previous column's state."""
        return residual if self.alpha is None else self.alpha * prev + residual

    def inverse(self, state: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The previous column's state rebuilt from this column's state and F_l."""
        return (state - residual) / self.alpha

    def forward(self, lower: torch.Tensor, upper_prev: torch.Tensor | None = None,
                prev: torch.Tensor | None = None) -> torch.Tensor:
        return self.combine(self.residual(lower, upper_prev), prev)


class RevColumn(nn.Module):
    """A column of 4 levels; states are a list ``[c0, c1, c2, c3]``."""

    def __init__(self, levels: Sequence[RevLevel]):
        super().__init__()
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor, prev: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        states: list[torch.Tensor] = []
        for i, level in enumerate(self.levels):
            states.append(level(*_level_inputs(i, x, states, prev)))
        return states


def _level_inputs(i: int, x: torch.Tensor, states: list, prev: list | None) -> tuple:
    """(lower, upper_prev, prev) for level ``i``: the stem output or this column's level i-1, the
    previous column's level i+1 (none at the top), the previous column's level i."""
    lower = x if i == 0 else states[i - 1]
    if prev is None:
        return lower, None, None
    return lower, prev[i + 1] if i + 1 < len(prev) else None, prev[i]


def _check_levels(name: str, values, minimum: int) -> list[int]:
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        raise ValueError(f"RevCol {name} must be a list of 4 ints (one per level), got {values!r}")
    if not all(isinstance(v, int) and v >= minimum for v in values):
        raise ValueError(f"RevCol {name} must be ints >= {minimum}, got {values!r}")
    return list(values)


def _revcol_args(args: list, c_in: int, ctx: BuildContext) -> list:
    """YAML ``[variant, *rest]`` -> paper widths (unscaled); ``[channels, layers, *rest]`` -> width/depth scaled."""
    if len(args) < 2:
        raise ValueError("RevCol args are [channels, layers, columns, ...] or [variant, ...], got none")
    c1, spec, *rest = args
    if isinstance(spec, str):
        if spec not in REVCOL_VARIANTS:
            raise ValueError(f"unknown RevCol variant {spec!r}; known: {', '.join(REVCOL_VARIANTS)}")
        channels, layers, columns = REVCOL_VARIANTS[spec]
        return [c1, list(channels), list(layers), columns, *rest]
    if not rest:
        raise ValueError("RevCol needs [channels, layers, columns, ...]: the per-level blocks list is missing")
    layers, *rest = rest
    channels = [ctx.width_of(c) for c in _check_levels("channels", spec, 1)]
    return [c1, channels, [ctx.depth_of(n) for n in _check_levels("layers", layers, 1)], *rest]


@register(scales_c2=False, prepare=_revcol_args)
class RevCol(nn.Module):
    """Reversible column backbone returning ``[P3, P4, P5]`` (levels 1-3 of the last column).

    Args:
        c1: input image channels.
        channels: widths of the 4 levels (strides 4/8/16/32).
        layers: blocks per level (F_l depth).
        columns: number of columns.
        block: level body, ``"convnext"`` (paper, LayerNorm) or ``"c2f"`` (YOLO C2f with BatchNorm).
        kernel: depthwise kernel of the ConvNeXt blocks.
        drop_path: maximum stochastic-depth rate, linearly spread over the blocks of a column and reused
            in every column (ConvNeXt levels only).
        save_memory: train through the reversible autograd function (same results, far less memory);
            eval mode, ``no_grad`` and ONNX export always take the plain forward.
        anchor_every: with ``save_memory``, also keep the exact states of every ``anchor_every``-th column
            so that round-off is rebuilt through at most ``anchor_every - 1`` columns (0: only the last
            column is kept, memory flat in the number of columns).
    """

    def __init__(self, c1: int = 3, channels: Sequence[int] = (64, 128, 256, 512),
                 layers: Sequence[int] = (2, 2, 4, 2), columns: int = 4, block: str = "convnext",
                 kernel: int = 3, drop_path: float = 0.0, save_memory: bool = True, anchor_every: int = 0):
        super().__init__()
        channels = _check_levels("channels", channels, 1)
        layers = _check_levels("layers", layers, 1)
        if not isinstance(columns, int) or columns < 1:
            raise ValueError(f"RevCol columns must be a positive int, got {columns!r}")
        if block not in LEVEL_BLOCKS:
            raise ValueError(f"RevCol block must be one of {LEVEL_BLOCKS}, got {block!r}")
        if block == "c2f" and (drop_path or kernel != 3):
            raise ValueError("RevCol kernel and drop_path apply to convnext levels only; use the defaults "
                             f"with block='c2f' (got kernel={kernel}, drop_path={drop_path})")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"RevCol drop_path must be in [0, 1), got {drop_path}")
        if not isinstance(anchor_every, int) or anchor_every < 0:
            raise ValueError(f"RevCol anchor_every must be an int >= 0, got {anchor_every!r}")
        self.level_channels, self.layers, self.save_memory = channels, layers, bool(save_memory)
        self.feature_info = [FeatureInfo(c, 4 * 2**i) for i, c in enumerate(channels) if i > 0]  # P3, P4, P5
        self.anchor_every = anchor_every
        self.stem = nn.Sequential(nn.Conv2d(c1, channels[0], 4, 4), LayerNorm2d(channels[0], eps=1e-6))
        blocks = sum(layers)
        rates = [drop_path * j / max(blocks - 1, 1) for j in range(blocks)]  # linear 0 -> drop_path
        self.columns = nn.ModuleList(
            RevColumn(self._make_level(i, block, kernel, rates, first_column=k == 0) for i in range(4))
            for k in range(columns)
        )
        self._init_weights(block)

    def _make_level(self, i: int, block: str, kernel: int, rates: list[float], first_column: bool) -> RevLevel:
        c, n = self.level_channels[i], self.layers[i]
        if block == "convnext":
            start = sum(self.layers[:i])
            body = nn.Sequential(*(ConvNeXtBlock(c, kernel, rates[start + j]) for j in range(n)))
        else:
            body = C2f(c, c, n, shortcut=True)
        c_lower = self.level_channels[i - 1] if i > 0 else None
        c_upper = self.level_channels[i + 1] if i < 3 else None
        return RevLevel(c, c_lower, c_upper, body, first_column)

    def _init_weights(self, block: str) -> None:
        """ConvNeXt init (truncated normal, zero bias); C2f bodies keep the YOLO default init."""
        self.stem.apply(_trunc_normal_init)
        for level in self.levels():
            for part in (level.down, level.up, level.body if block == "convnext" else None):
                if part is not None:
                    part.apply(_trunc_normal_init)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"RevCol needs an input height and width divisible by 32, got {tuple(x.shape[-2:])}")
        if self.training:
            self._clamp_alphas()
        x = self.stem(x)
        if self._reversible_now(x):
            states = ReversibleColumns.apply(self, x, *self._trainable_column_params())
        else:
            states = None
            for column in self.columns:
                states = column(x, states)
        return list(states[1:])

    @property
    def compile_unsupported(self) -> str | None:
        """Why torch.compile cannot take this module now: training through the reversible autograd function."""
        return "its reversible autograd function (save_memory=True) runs its own backward" \
            if self.save_memory and self.training else None

    def _trainable_column_params(self) -> list[nn.Parameter]:
        return [p for p in self.columns.parameters() if p.requires_grad]

    def _reversible_now(self, x: torch.Tensor) -> bool:
        """Training with gradients; eval mode, no_grad and tracing (ONNX) take the plain forward."""
        if not (self.save_memory and self.training and torch.is_grad_enabled()) or torch.jit.is_tracing():
            return False
        return x.requires_grad or any(p.requires_grad for p in self.columns.parameters())

    @torch.no_grad()
    def _clamp_alphas(self) -> None:
        """Keep every |alpha| >= ALPHA_MIN with its sign (written only when needed)."""
        for level in self.levels():
            a = level.alpha
            if a is not None and bool((a.abs() < ALPHA_MIN).any()):
                a.copy_(torch.where(a >= 0, a.clamp(min=ALPHA_MIN), a.clamp(max=-ALPHA_MIN)))

    def levels(self) -> Iterator[RevLevel]:
        """All levels, column by column."""
        for column in self.columns:
            yield from column.levels


def _trunc_normal_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------------
# Reversible training


def _rng_snapshot(device: torch.device) -> torch.Tensor:
    """State of the generator that drop path uses for tensors on ``device`` (CPU: 5 KB, CUDA: 16 bytes)."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


@contextlib.contextmanager
def _replayed_rng(snapshot: torch.Tensor, device: torch.device):
    """Run a block with the RNG state of ``snapshot``; the caller's RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if device.type == "cuda":
            torch.cuda.set_rng_state(snapshot, device)
        else:
            torch.set_rng_state(snapshot)
        yield


@contextlib.contextmanager
def _frozen_batchnorm_stats(module: nn.Module):
    """Recompute with batch statistics but leave BatchNorm running statistics untouched."""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def _accumulate(total: torch.Tensor | None, grad: torch.Tensor | None) -> torch.Tensor | None:
    if grad is None:
        return total
    return grad if total is None else total + grad


class ReversibleColumns(torch.autograd.Function):
    """All columns of a ``RevCol`` as one autograd node that keeps only the stem output and the last
    column's states (plus those of the anchor columns); backward rebuilds earlier states column by
    column and recomputes each F_l.

    Parameters are explicit inputs and their gradients are returned (not accumulated from inside
    backward), so every parameter gets exactly one gradient from the outer engine: DDP hooks fire once,
    with ``find_unused_parameters`` False or True.
    """

    @staticmethod
    def forward(ctx, net: RevCol, x: torch.Tensor, *params: torch.Tensor):
        device = x.device
        if device.type not in ("cpu", "cuda"):
            raise NotImplementedError(f"RevCol save_memory=True supports CPU and CUDA, not {device.type}; "
                                      "set save_memory=False")
        ctx.net, ctx.device = net, device
        ctx.autocast = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        ctx.rng, ctx.dtypes, ctx.anchor_columns, anchors = [], [], [], []
        states = None
        for k, column in enumerate(net.columns):
            new: list[torch.Tensor] = []
            ctx.rng.append([])
            for i, level in enumerate(column.levels):
                ctx.rng[-1].append(_rng_snapshot(device))
                new.append(level(*_level_inputs(i, x, new, states)))
            states = new
            ctx.dtypes.append([s.dtype for s in states])
            if net.anchor_every and (k + 1) % net.anchor_every == 0 and k < len(net.columns) - 1:
                ctx.anchor_columns.append(k)
                anchors += states
        ctx.save_for_backward(x, *states, *anchors)
        return tuple(states)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_states: torch.Tensor):
        net, device = ctx.net, ctx.device
        x, *states = ctx.saved_tensors
        states, kept = states[:4], states[4:]
        anchors = {k: kept[4 * j:4 * j + 4] for j, k in enumerate(ctx.anchor_columns)}
        params = [p for p in net.columns.parameters() if p.requires_grad]
        slot = {id(p): j for j, p in enumerate(params)}
        param_grads: list[torch.Tensor | None] = [None] * len(params)
        grads: list[torch.Tensor | None] = list(grad_states)
        grad_x = None
        x = x.detach().requires_grad_()
        enabled, dtype = ctx.autocast
        for k in reversed(range(len(net.columns))):
            column, first = net.columns[k], k == 0
            prev_states: list = [None] * 4
            prev_grads: list = [None] * 4
            for i in reversed(range(4)):
                level = column.levels[i]
                lower, upper_prev, _ = _level_inputs(i, x, states, None if first else prev_states)
                lower = lower if i == 0 else lower.detach().requires_grad_()
                upper_prev = None if upper_prev is None else upper_prev.detach().requires_grad_()
                level_params = [p for p in level.parameters() if p.requires_grad]
                with (torch.enable_grad(), _replayed_rng(ctx.rng[k][i], device), _frozen_batchnorm_stats(level),
                      torch.autocast(device.type, dtype=dtype, enabled=enabled)):
                    residual = level.residual(lower, upper_prev)
                    prev = None
                    if not first:
                        prev = anchors[k - 1][i] if k - 1 in anchors else level.inverse(states[i], residual.detach())
                        prev = prev.to(ctx.dtypes[k - 1][i]).detach().requires_grad_()
                    out = level.combine(residual, prev)
                inputs = [t for t in (lower, upper_prev, prev) if t is not None]
                if grads[i] is None:  # nothing downstream used this state
                    d = [None] * (len(inputs) + len(level_params))
                else:
                    d = torch.autograd.grad(out, inputs + level_params, grads[i], allow_unused=True)
                d_lower, d_rest = d[0], list(d[1:len(inputs)])
                if i == 0:
                    grad_x = _accumulate(grad_x, d_lower)
                else:
                    grads[i - 1] = _accumulate(grads[i - 1], d_lower)
                if upper_prev is not None:
                    prev_grads[i + 1] = _accumulate(prev_grads[i + 1], d_rest.pop(0))
                if prev is not None:
                    prev_grads[i] = _accumulate(prev_grads[i], d_rest.pop(0))
                    prev_states[i] = prev.detach()
                for p, g in zip(level_params, d[len(inputs):]):
                    param_grads[slot[id(p)]] = g
                del residual, out, d
            states, grads = prev_states, prev_grads
        return (None, grad_x if ctx.needs_input_grad[1] else None, *param_grads)


@torch.no_grad()
def reconstruction_errors(net: RevCol, images: torch.Tensor,
                          autocast_dtype: torch.dtype | None = None) -> list[float]:
    """Relative error (max |rebuilt - true| / max |true| over the 4 levels) of the states of columns
    0..N-2 rebuilt backwards from the last column, as the ``save_memory`` backward does; column 0 first.

    Runs in the module's current mode and dtype (use eval mode so drop path is off), optionally under
    autocast with ``autocast_dtype``.
    """
    device = images.device.type
    with torch.autocast(device, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        x = net.stem(images)
        true_states, states = [], None
        for column in net.columns:
            states = column(x, states)
            true_states.append(states)
        errors = []
        for k in reversed(range(1, len(net.columns))):
            column, rebuilt = net.columns[k], [None] * 4
            for i in reversed(range(4)):
                lower, upper_prev, _ = _level_inputs(i, x, states, rebuilt)
                residual = column.levels[i].residual(lower, upper_prev)
                rebuilt[i] = column.levels[i].inverse(states[i], residual).to(true_states[k - 1][i].dtype)
            errors.append(max(float((r.float() - t.float()).abs().max() / t.float().abs().max().clamp_min(1e-12))
                              for r, t in zip(rebuilt, true_states[k - 1])))
            states = rebuilt
    return errors[::-1]
