"""Tables of docs/modules/revcol.md: yolov8-revcol vs yolov8 cost, and our RevCol-T/S backbones vs the paper.

Usage: ``.venv/bin/python benchmarks/revcol_table.py [--runs 5] [--threads 1] [--no-latency]``

1. Params, GFLOPs (``FlopCounterMode``, eval, batch 1, 640x640) and CPU latency of the fused model,
   median over ``--runs`` forwards after one warm-up, reported as process CPU time with the wall time
   in brackets (on a CPU shared with other jobs the wall time mostly measures the load).
2. The bare RevCol-T/S backbones at 224x224 next to the paper's ImageNet numbers. The paper counts
   multiply-accumulates (fvcore) and includes its classifier; ``FlopCounterMode`` counts 2 FLOPs per
   multiply-accumulate, so GFLOPs / 2 is the comparable figure.
"""

from __future__ import annotations

import argparse

import torch

from yololab.nn import DetectionModel
from yololab.nn.revcol import REVCOL_VARIANTS, RevCol
from yololab.utils.profile import count_gflops, count_params, machine_summary, measure_latency

MODELS = ["yolov8n", "yolov8n-revcol", "yolov8s", "yolov8s-revcol"]
# megvii-research/RevCol README, ImageNet-1K 224: params, GMACs, top-1
PAPER = {"T": (30e6, 4.5, 82.2), "S": (60e6, 9.0, 83.5)}


def cpu_latency(model: torch.nn.Module, imgsz: int, runs: int) -> tuple[float, float]:
    """(process CPU ms, wall ms) per forward of a fused eval copy: medians over ``runs`` after one warm-up."""
    t = measure_latency(model, imgsz, warmup=1, runs=runs)
    return t["cpu_median_ms"], t["median_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{machine_summary()}\n")
    print("| model | params | GFLOPs 640 | CPU ms 640 (wall) |")
    print("|---|---|---|---|")
    for name in MODELS:
        model = DetectionModel(f"{name}.yaml")
        latency = "-" if args.no_latency else "{:.0f} ({:.0f})".format(*cpu_latency(model, 640, args.runs))
        print(f"| {name} | {count_params(model) / 1e6:.2f}M | {count_gflops(model, 640):.2f} | {latency} |",
              flush=True)
    print("\n| backbone | params (ours) | GFLOPs 224 (ours) | GMACs 224 (ours) | paper params | paper GMACs "
          "| paper ImageNet top-1 |")
    print("|---|---|---|---|---|---|---|")
    for variant, (params, gmacs, top1) in PAPER.items():
        channels, layers, columns = REVCOL_VARIANTS[variant]
        net = RevCol(3, channels, layers, columns)
        gflops = count_gflops(net, 224)
        print(f"| RevCol-{variant} ({columns} columns) | {count_params(net) / 1e6:.1f}M | {gflops:.2f} "
              f"| {gflops / 2:.2f} | {params / 1e6:.0f}M | {gmacs} | {top1}% |", flush=True)


if __name__ == "__main__":
    main()
