"""Tables of docs/modules/slimneck.md and docs/modules/spconv.md: slim-neck and SPConv configs vs baselines.

Usage: ``.venv/bin/python benchmarks/slimneck_table.py [--runs 5] [--rounds 3] [--no-latency]``

1. Params, GFLOPs (``FlopCounterMode``, eval, batch 1, 640x640) and CPU time of the fused model
   for the slim-neck and SPConv configs next to their baselines. Timing runs on ONE thread and
   reports the process CPU time per image next to the wall time: on a CPU shared with other jobs the
   wall time mostly measures the load, the CPU time much less so. Models are interleaved within each
   round and the median over rounds is reported.
2. The paper's comparison: the slim-neck paper counts YOLOv5 with its anchor-based head (three 1x1
   convs to ``3 * (5 + nc)`` channels). Our body (everything but Detect) plus that head, computed,
   is set next to the published numbers, and so is the parameter count the authors' code would
   report: it also builds, in every VoVGSCSP, a 3x3 conv (``res``) that its forward never uses.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils.flop_counter import FlopCounterMode

from yololab.nn import DetectionModel
from yololab.nn.slimneck import VoVGSCSP
from yololab.utils.profile import count_gflops, count_params, machine_summary, measure_latency

SLIMNECK_PAIRS = [("yolov5n", "yolov5n-slimneck"), ("yolov8n", "yolov8n-slimneck"), ("yolov8s", "yolov8s-slimneck")]
SPCONV_PAIRS = [("yolov8n", "yolov8n-spconv"), ("yolov8s", "yolov8s-spconv")]
# Slim-neck README / paper, MS COCO 640, anchor-based YOLOv5 head: (params, GFLOPs) baseline -> slim-neck.
PUBLISHED = {"yolov5n": ((1.9e6, 4.5), (1.8e6, 4.0)), "yolov5s": ((7.2e6, 16.4), (7.0e6, 14.5))}


def latencies(names: list[str], runs: int, rounds: int, imgsz: int = 640) -> dict[str, tuple[float, float]]:
    """Per model: median over rounds of (wall, CPU) ms, models interleaved within each round."""
    models = {n: DetectionModel(f"{n}.yaml") for n in names}
    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for _ in range(rounds):
        for name, model in models.items():
            t = measure_latency(model, imgsz, warmup=2, runs=runs)
            samples[name].append((t["median_ms"], t["cpu_median_ms"]))
    return {n: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for n, v in samples.items()}


def cost_table(pairs: list[tuple[str, str]], latency_ms: dict[str, tuple[float, float]] | None) -> str:
    lines = ["| model | params | GFLOPs @640 | vs baseline (params / GFLOPs) | CPU time @640, 1 thread (ms) | "
             "wall @640, 1 thread (ms) |", "|---|---|---|---|---|---|"]
    for base, variant in pairs:
        costs = {n: _cost(n) for n in (base, variant)}
        for name, (params, gflops) in costs.items():
            bp, bg = costs[base]
            delta = "-" if name == base else f"{100 * (params / bp - 1):+.1f}% / {100 * (gflops / bg - 1):+.1f}%"
            cpu = f"{latency_ms[name][1]:.0f}" if latency_ms else "not measured"
            wall = f"{latency_ms[name][0]:.0f}" if latency_ms else "not measured"
            lines.append(f"| {name} | {params / 1e6:.3f}M | {gflops:.2f} | {delta} | {cpu} | {wall} |")
    return "\n".join(lines)


def _cost(name: str) -> tuple[int, float]:
    model = DetectionModel(f"{name}.yaml")
    return count_params(model), count_gflops(model, 640)


def anchor_head_cost(channels: list[int], strides: list[float], imgsz: int = 640, nc: int = 80) -> tuple[int, float]:
    """Params and GFLOPs of YOLOv5's anchor-based head: per level a 1x1 conv (with bias) to 3 * (5 + nc)."""
    c_out = 3 * (5 + nc)
    params = sum((c + 1) * c_out for c in channels)
    flops = sum(2 * c * c_out * (imgsz / s) ** 2 for c, s in zip(channels, strides))
    return params, flops / 1e9


def _body_cost(model: DetectionModel, imgsz: int = 640) -> tuple[int, float]:
    """Params and GFLOPs of everything but the Detect head."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, imgsz, imgsz))
    head_flops = sum(counter.get_flop_counts()[f"DetectionModel.model.{len(model.model) - 1}"].values())
    return count_params(model) - count_params(model.head), (counter.get_total_flops() - head_flops) / 1e9


def unused_res_params(model: DetectionModel) -> int:
    """Params of the 3x3 conv + BN (``res``) the authors' VoVGSCSP builds but never runs: 9 c_^2 + 2 c_."""
    hidden = [m.cv1.conv.out_channels for m in model.modules() if isinstance(m, VoVGSCSP)]
    return sum(9 * c * c + 2 * c for c in hidden)


def paper_table() -> str:
    lines = ["| model | ours: body (no head) | ours: body + YOLOv5 anchor head (computed) | "
             "params incl. the authors' unused `res` convs | published |", "|---|---|---|---|---|"]
    for base in PUBLISHED:
        for name, published in zip((base, f"{base}-slimneck"), PUBLISHED[base]):
            model = DetectionModel(f"{name}.yaml")
            body_p, body_g = _body_cost(model)
            channels = [model.table[i].channels for i in model.head.f]
            head_p, head_g = anchor_head_cost(channels, model.stride.tolist())
            with_res = f"{(body_p + head_p + unused_res_params(model)) / 1e6:.3f}M" if "slimneck" in name else "-"
            lines.append(f"| {name} | {body_p / 1e6:.3f}M / {body_g:.2f} | {(body_p + head_p) / 1e6:.3f}M / "
                         f"{body_g + head_g:.2f} | {with_res} | {published[0] / 1e6:.1f}M / {published[1]:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model per round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median of round medians)")
    parser.add_argument("--no-latency", action="store_true", help="skip the CPU latency column")
    args = parser.parse_args()

    names = sorted({n for pair in SLIMNECK_PAIRS + SPCONV_PAIRS for n in pair})
    torch.set_num_threads(1)
    latency_ms = None if args.no_latency else latencies(names, args.runs, args.rounds)
    print(f"# machine: {machine_summary()}; timing: batch 1, fused, median of {args.rounds} rounds x "
          f"{args.runs} runs\n")
    print("## Slim-neck vs baselines\n")
    print(cost_table(SLIMNECK_PAIRS, latency_ms))
    print("\n## Slim-neck against the paper's numbers (params / GFLOPs at 640)\n")
    print(paper_table())
    print("\n## SPConv vs baselines\n")
    print(cost_table(SPCONV_PAIRS, latency_ms))


if __name__ == "__main__":
    main()
