"""Training-step speed of a detector in contiguous vs channels-last memory format (forward + backward of a
stand-in loss, the mean of the head outputs).

Backs the trainer's choice of channels-last. Alternates the two layouts in rounds on one random batch and reports
the median step time of each; run on an otherwise idle machine.

    python benchmarks/train_step.py                       # yolov8n, batch 16, 320 px, CPU
"""

from __future__ import annotations

import argparse
import statistics

import torch

from yololab.nn import DetectionModel
from yololab.utils.profile import machine_summary, time_calls


def step_fn(model: torch.nn.Module, x: torch.Tensor):
    def step():
        model.zero_grad(set_to_none=True)
        sum(f.float().mean() for f in model(x)).backward()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="yolov8n.yaml")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=3, help="timed steps per layout per round")
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.imgsz, args.imgsz)
    steps = {}
    for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        model = DetectionModel(args.model).train().to(memory_format=fmt)
        steps[layout] = step_fn(model, x.contiguous(memory_format=fmt))
    medians = {layout: [] for layout in steps}
    for _ in range(args.rounds):
        for layout, step in steps.items():
            medians[layout].append(time_calls(step, warmup=1, runs=args.runs)["median_ms"])
    ms = {layout: statistics.median(v) for layout, v in medians.items()}
    print(f"{args.model}, batch {args.batch}, {args.imgsz} px, forward + backward; {machine_summary()}\n")
    print("| layout | median step ms | images/s |\n|---|---|---|")
    for layout, v in ms.items():
        print(f"| {layout} | {v:.0f} | {args.batch / v * 1000:.1f} |")
    print(f"\nchannels_last / contiguous step time: {ms['channels_last'] / ms['contiguous']:.2f}")


if __name__ == "__main__":
    main()
