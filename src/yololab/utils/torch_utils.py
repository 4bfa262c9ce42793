"""Training helpers: seeding, RNG state capture, EMA of weights, weight transfer, parameter groups."""

from __future__ import annotations

import json
import math
import os
import random
import time
from copy import deepcopy
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import UserError


def init_seeds(seed: int = 0, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; with ``deterministic`` ask torch for deterministic kernels (warn only)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # a debugging aid of deterministic mode that NaN-fills every new tensor: 10% of a CPU training step
        # (benchmarks/train_profile.py), and nothing yololab runs reads memory it did not write
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


def rng_states() -> dict:
    """The global RNG states as tensors and strings (loadable with ``torch.load(weights_only=True)``)."""
    states = {
        "torch": torch.get_rng_state(),
        "numpy": json.dumps(_jsonable_numpy_state(np.random.get_state())),
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore states captured by ``rng_states``."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = json.loads(states["numpy"])
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = json.loads(states["python"])
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _jsonable_numpy_state(state: tuple) -> list:
    name, keys, pos, has_gauss, cached = state
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def resolve_amp(amp: str | bool, device_type: str) -> str:
    """What an ``amp`` setting (auto, true, false, bf16) does on a device type: ``"false"`` (float32), ``"true"``
    (CUDA mixed precision: float16 with a gradient scaler, bfloat16 where the GPU has it) or ``"bf16"``.

    ``auto`` is ``true``: float32 on CPU, where bf16 stays an explicit choice. On BCCD bf16 trained as accurately as
    float32 and faster (benchmarks/RESULTS.md, train_vs_peer), but only some CPUs have it natively, and a recipe
    whose precision followed the machine would mix bf16 and float32 runs in one comparison resumed elsewhere."""
    amp = str(amp).lower()
    if amp == "auto":
        amp = "true"
    return "false" if amp == "true" and device_type != "cuda" else amp


def same_amp(a: str | bool, b: str | bool) -> bool:
    """Whether two ``amp`` settings train alike on CPU and on CUDA (true and auto do)."""
    return all(resolve_amp(a, device) == resolve_amp(b, device) for device in ("cpu", "cuda"))


def fused_copy(model: nn.Module, fuse: bool = True) -> nn.Module:
    """A float32 eval-mode copy of ``model``, with BatchNorms and re-parameterizable branches folded when ``fuse``
    (same eval outputs, faster); the caller's model is left untouched."""
    model = deepcopy(model).float().eval()
    if fuse and callable(getattr(model, "fuse", None)):
        model.fuse()
    return model


def compile_blocker(model: nn.Module) -> str | None:
    """Why ``model`` must run uncompiled: the reason the first of its modules gives in ``compile_unsupported``
    (a class attribute or property; plug-in modules get one from ``load_plugins``), else None."""
    for name, module in unwrap(model).named_modules():
        reason = getattr(module, "compile_unsupported", None)
        if reason:
            return f"{name or 'the model'} ({type(module).__name__}): {reason}"
    return None


class CompiledModel:
    """``model`` called through ``torch.compile`` (inductor, static shapes), or the plain module where the model
    declares it cannot compile (``compile_blocker``) or the compiler fails; each fallback is logged with its reason,
    and the first compiled call (the compilation) with its time. Parameters and state stay those of ``model``."""

    def __init__(self, model: nn.Module, log: Callable[[str], None] = print):
        self.model, self.log = model, log
        self.compile_s: float | None = None
        reason = compile_blocker(model)
        self.compiled = None if reason else torch.compile(model, dynamic=False)
        if reason:
            log(f"compile=true: running uncompiled, {reason}")

    def __call__(self, *args: Any) -> Any:
        if self.compiled is None:
            return self.model(*args)
        from torch._dynamo.exc import TorchDynamoException  # loads the compiler: only where it is used

        t0 = time.perf_counter()
        try:
            out = self.compiled(*args)
        except TorchDynamoException as e:
            self.compiled = None
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            self.log(f"compile=true: running uncompiled, torch.compile failed ({type(e).__name__}: {reason})")
            return self.model(*args)
        if self.compile_s is None:
            self.compile_s = time.perf_counter() - t0
            self.log(f"compile=true: forward compiled in {self.compile_s:.1f} s (first call; later calls reuse it)")
        return out


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    The decay ramps up as ``decay * (1 - exp(-updates / tau))`` so early, fast-changing weights are not
    frozen in the average.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = deepcopy(unwrap(model)).float().eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates
        self._ema_tensors = [v for v in self.ema.state_dict().values() if v.dtype.is_floating_point]

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the model's current weights into the average."""
        self.updates += 1
        source = [v for v in unwrap(model).state_dict().values() if v.dtype.is_floating_point]
        source = [v.float() if v.dtype != torch.float32 else v for v in source]
        torch._foreach_lerp_(self._ema_tensors, source, 1.0 - self.current_decay())

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict, updates: int) -> None:
        self.ema.load_state_dict(state)
        self.updates = updates


def transfer_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy the tensors of ``state`` whose name and shape match ``model``; return (loaded, skipped) key lists."""
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    skipped = [k for k in own if k not in matching]
    return list(matching), skipped


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Three groups: weights with decay, normalisation weights without, biases without (in that order)."""
    decay, norm, bias = [], [], []
    norm_types = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                bias.append(p)
            elif isinstance(module, norm_types):
                norm.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "weights"},
            {"params": norm, "weight_decay": 0.0, "name": "norm"},
            {"params": bias, "weight_decay": 0.0, "name": "bias"}]


def select_device(device: str | int | torch.device | None) -> torch.device:
    """``None``/``""`` -> CUDA if available else CPU; ``"0"``/``0``/``"cuda:0"``/``"cpu"`` as given."""
    if isinstance(device, torch.device):
        return device
    text = "" if device is None else str(device).strip().lower()
    if not text:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.split(",")[0].isdigit():
        text = f"cuda:{text.split(',')[0]}"
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but CUDA is not available (use device=cpu)")
    return torch.device(text)
