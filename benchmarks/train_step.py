"""Training-step speed of a detector in contiguous vs channels-last memory format, and with ``--bf16`` / ``--compile``
also under bfloat16 autocast and compiled (forward + backward of a stand-in loss, the mean of the head outputs).

Backs the trainer's choice of channels-last and the advice on ``amp=bf16`` and ``compile=true``. Alternates the
variants in rounds on one random batch and reports the median step time of each; run on an otherwise idle machine.
A compiled variant compiles during its first (untimed) warm-up step; that time is reported apart.

    python benchmarks/train_step.py                       # yolov8n, batch 16, 320 px, CPU
    python benchmarks/train_step.py --bf16 --compile      # + bf16 autocast and compiled channels-last steps
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from typing import Callable

import torch

from yololab.nn import DetectionModel
from yololab.utils.profile import machine_summary, time_calls
from yololab.utils.torch_utils import CompiledModel


def step_fn(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None = None,
            forward: Callable | None = None) -> Callable[[], None]:
    """One training step of ``model`` on ``x`` (through ``forward``, e.g. a compiled one), autocast in ``dtype``."""
    forward = forward or model

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext():
            outputs = forward(x)
        sum(f.float().mean() for f in outputs).backward()
    return step


def variants(args, x: torch.Tensor) -> dict[str, Callable[[], None]]:
    """The steps to time by name: both layouts in float32, plus bf16 and compiled channels-last ones when asked."""
    steps = {}
    for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        model = DetectionModel(args.model).train().to(memory_format=fmt)
        steps[layout] = step_fn(model, x.contiguous(memory_format=fmt))
        if args.bf16:
            steps[f"{layout} bf16"] = step_fn(model, x.contiguous(memory_format=fmt), torch.bfloat16)
    if args.compile:
        x_cl = x.contiguous(memory_format=torch.channels_last)
        for dtype, name in ((None, "channels_last compiled"), (torch.bfloat16, "channels_last bf16 compiled")):
            if dtype is None or args.bf16:
                model = DetectionModel(args.model).train().to(memory_format=torch.channels_last)
                steps[name] = step_fn(model, x_cl, dtype, CompiledModel(model))
    return steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="yolov8n.yaml")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=3, help="timed steps per variant per round")
    p.add_argument("--bf16", action="store_true", help="also bfloat16 autocast steps")
    p.add_argument("--compile", action="store_true", help="also compiled channels-last steps (torch.compile)")
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.imgsz, args.imgsz)
    steps = variants(args, x)
    first_step_s = {}
    for name, step in steps.items():  # untimed warm-up; compiles the compiled variants
        t0 = time.perf_counter()
        step()
        first_step_s[name] = time.perf_counter() - t0
    medians = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            medians[name].append(time_calls(step, warmup=0, runs=args.runs)["median_ms"])
    ms = {name: statistics.median(v) for name, v in medians.items()}
    print(f"{args.model}, batch {args.batch}, {args.imgsz} px, forward + backward; {machine_summary()}\n")
    print("| variant | median step ms | images/s | vs contiguous | first step s |\n|---|---|---|---|---|")
    for name, v in ms.items():
        print(f"| {name} | {v:.0f} | {args.batch / v * 1000:.1f} | {v / ms['contiguous']:.2f} "
              f"| {first_step_s[name]:.1f} |")


if __name__ == "__main__":
    main()
