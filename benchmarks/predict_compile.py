"""Inference latency of the fused PyTorch model, plain vs ``compile=true`` (torch.compile, inductor), the way the
predictor runs it (eval mode, inference mode, float32), with the compile time.

Alternates the two in rounds on one random image batch and reports the median latency of each; run on an otherwise
idle machine.

    python benchmarks/predict_compile.py                  # yolov8n, batch 1, 640 px, CPU
    python benchmarks/predict_compile.py --imgsz 320 --batch 16
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from yololab.engine.predictor import as_inference_model
from yololab.nn import DetectionModel
from yololab.utils.profile import machine_summary, time_calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="yolov8n.yaml")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=20, help="timed calls per variant per round")
    args = p.parse_args()
    torch.manual_seed(0)
    model = DetectionModel(args.model)
    x = torch.rand(args.batch, 3, args.imgsz, args.imgsz)
    runners = {"eager": as_inference_model(model, "cpu"), "compiled": as_inference_model(model, "cpu", compile=True)}
    first_call_s = {}
    for name, runner in runners.items():  # the compiled one compiles here
        t0 = time.perf_counter()
        runner(x)
        first_call_s[name] = time.perf_counter() - t0
    max_diff = (runners["compiled"](x) - runners["eager"](x)).abs().max().item()
    medians = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            medians[name].append(time_calls(functools.partial(runner, x), warmup=2, runs=args.runs)["median_ms"])
    ms = {name: statistics.median(v) for name, v in medians.items()}
    print(f"{args.model} fused, batch {args.batch}, {args.imgsz} px, inference; {machine_summary()}\n")
    print("| variant | median ms | vs eager | first call s |\n|---|---|---|---|")
    for name, v in ms.items():
        print(f"| {name} | {v:.1f} | {v / ms['eager']:.2f} | {first_call_s[name]:.1f} |")
    print(f"\nlargest output difference compiled vs eager: {max_diff:.2e}")


if __name__ == "__main__":
    main()
