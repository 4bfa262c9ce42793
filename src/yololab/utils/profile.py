"""Model cost: parameters, GFLOPs (PyTorch's own FLOP counter) and latency."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .threads import describe as describe_threads
from .torch_utils import fused_copy

# CPU flags of native bfloat16 arithmetic (AMX tiles, AVX512-BF16 dot products): bf16 autocast is fast only there.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The feature flags of this CPU as Linux lists them in ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(ln.split(":", 1)[1].split()) for ln in f if ln.startswith("flags")), set())
    except OSError:
        return set()


def native_bf16_flags() -> list[str]:
    """Which of ``NATIVE_BF16_FLAGS`` this CPU has (empty: bf16 would be emulated, slower than float32)."""
    flags = cpu_flags()
    return [flag for flag in NATIVE_BF16_FLAGS if flag in flags]


def machine_summary(load: bool = True) -> str:
    """One line saying where numbers were measured: CPU, cores, torch and its threads, GPU when present, and the
    current load average unless ``load=False``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    # the kernels torch picks (numerics differ between them) and the native bf16 units
    cpu += f" ({', '.join([torch.backends.cpu.get_cpu_capability(), *native_bf16_flags()])})"
    load_now = f", load average {os.getloadavg()[0]:.1f}" if load and hasattr(os, "getloadavg") else ""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__} with {describe_threads()}{load_now}{gpu}"


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def _input_for(model: nn.Module, imgsz: int | tuple[int, int], batch: int = 1) -> torch.Tensor:
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    p = next(model.parameters(), None)
    ch = getattr(model, "yaml", {}).get("ch", 3) if isinstance(getattr(model, "yaml", None), dict) else 3
    return torch.zeros(batch, ch, h, w, device=p.device if p is not None else "cpu")


def count_gflops(model: nn.Module, imgsz: int | tuple[int, int] = 640) -> float:
    """GFLOPs of one eval-mode forward at batch 1, counted by ``torch.utils.flop_counter.FlopCounterMode``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(_input_for(model, imgsz))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def measure_latency(model: nn.Module, imgsz: int | tuple[int, int] = 640, *, batch: int = 1, warmup: int = 3,
                    runs: int = 20, fuse: bool = True) -> dict[str, float]:
    """Median and p90 eval-mode latency in milliseconds (a fused copy by default)."""
    model = fused_copy(model, fuse)
    x = _input_for(model, imgsz, batch)
    with torch.inference_mode():
        return time_calls(lambda: model(x), warmup=warmup, runs=runs,
                          sync=torch.cuda.synchronize if x.is_cuda else None)


def time_calls(fn: Callable[[], Any], *, warmup: int = 3, runs: int = 20,
               sync: Callable[[], Any] | None = None) -> dict[str, float]:
    """Median and p90 wall milliseconds of ``fn()`` over ``runs`` timed calls after ``warmup`` untimed ones,
    and the median process CPU milliseconds (``cpu_median_ms``), which stays comparable when other jobs share
    the CPU. ``sync`` (e.g. ``torch.cuda.synchronize``) is called before starting and stopping each clock.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    times, cpu = [], []
    for i in range(warmup + runs):
        if sync:
            sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if sync:
            sync()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
            "cpu_median_ms": statistics.median(cpu)}
