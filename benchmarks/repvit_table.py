"""Tables of docs/modules/repvit.md: RepViT variants against timm, and the RepViT configs against their baselines.

Usage: ``.venv/bin/python benchmarks/repvit_table.py [--runs 5] [--rounds 3] [--pairs 10] [--threads 1] [--no-latency]``

1. Backbones: parameters of our RepViT feature extractor (stem + 4 stages, P3/P4/P5 out) next to timm's
   ``repvit_m*`` with ``features_only=True, out_indices=(1, 2, 3)``, GFLOPs at 224, fused parameters.
2. Detectors: params, GFLOPs (``FlopCounterMode``, eval, batch 1, 640x640) and fused CPU latency at 640
   (median over ``rounds`` rounds of ``measure_latency`` medians; models are interleaved within a round so
   that a shared, drifting CPU load hits all of them alike).
3. Re-parameterization of the RepViT configs: unfused and fused copies timed alternately, forward by
   forward, and the median of the per-pair fused/unfused latency ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import timm
import torch
from torch import nn

from yololab.nn import DetectionModel
from yololab.nn.repvit import VARIANTS, RepViT
from yololab.utils.profile import count_gflops, count_params, machine_summary, measure_latency

PAIRS = [("yolov8n", "yolov8n-repvit"), ("yolov8s", "yolov8s-repvit"),
         ("yolo11n", "yolo11n-repvit"), ("yolo11s", "yolo11s-repvit")]


def backbone_table() -> str:
    lines = ["| variant | widths | blocks per stage | params (ours) | params (timm features_only) | "
             "params fused | GFLOPs @224 |", "|---|---|---|---|---|---|---|"]
    for name, spec in VARIANTS.items():
        ours = RepViT(3, name).eval()
        ref = timm.create_model(f"repvit_{name}", pretrained=False, features_only=True, out_indices=(1, 2, 3))
        gflops = count_gflops(ours, 224)
        fused = count_params(ours.fuse())
        lines.append(f"| {name} | {'/'.join(map(str, spec.widths))} | {'/'.join(map(str, spec.depths))} | "
                     f"{count_params(RepViT(3, name)):,} | {count_params(ref):,} | {fused:,} | {gflops:.2f} |")
    return "\n".join(lines)


def fused_latencies(names: list[str], runs: int, rounds: int, imgsz: int = 640) -> dict[str, float]:
    """Median over rounds of ``measure_latency`` medians (ms, fused), models interleaved within each round."""
    models = {n: DetectionModel(f"{n}.yaml") for n in names}
    samples: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for name, model in models.items():
            samples[name].append(measure_latency(model, imgsz, warmup=2, runs=runs)["median_ms"])
    return {n: statistics.median(v) for n, v in samples.items()}


def fuse_speedup(unfused: nn.Module, fused: nn.Module, pairs: int, imgsz: int = 640) -> tuple[float, float, float]:
    """Unfused and fused models timed alternately (one forward each per pair): median ms of each and the
    median of the per-pair fused/unfused ratios, which a drifting shared CPU load affects least."""
    x = torch.zeros(1, 3, imgsz, imgsz)
    times: dict[bool, list[float]] = {True: [], False: []}
    with torch.inference_mode():
        for model in (unfused, fused):
            model(x)  # warm-up
        for _ in range(pairs):
            for is_fused, model in ((False, unfused), (True, fused)):
                t0 = time.perf_counter()
                model(x)
                times[is_fused].append((time.perf_counter() - t0) * 1000)
    ratios = [f / u for f, u in zip(times[True], times[False])]
    return statistics.median(times[False]), statistics.median(times[True]), statistics.median(ratios)


def detector_table(latency_ms: dict[str, float] | None) -> str:
    lines = ["| model | params | GFLOPs @640 | vs baseline (params / GFLOPs) | CPU ms @640, fused |",
             "|---|---|---|---|---|"]
    for base, variant in PAIRS:
        costs = {}
        for name in (base, variant):
            model = DetectionModel(f"{name}.yaml")
            costs[name] = count_params(model), count_gflops(model, 640)
        bp, bg = costs[base]
        for name, (params, gflops) in costs.items():
            delta = "-" if name == base else f"{100 * (params / bp - 1):+.1f}% / {100 * (gflops / bg - 1):+.1f}%"
            ms = f"{latency_ms[name]:.0f}" if latency_ms else "not measured"
            lines.append(f"| {name} | {params / 1e6:.3f}M | {gflops:.2f} | {delta} | {ms} |")
    return "\n".join(lines)


def fuse_table(pairs: int) -> str:
    lines = ["| model | params unfused / fused | CPU ms @640 unfused | CPU ms @640 fused | fused / unfused |",
             "|---|---|---|---|---|"]
    for _, name in PAIRS:
        unfused = DetectionModel(f"{name}.yaml").eval()
        fused = copy.deepcopy(unfused).fuse()
        unfused_ms, fused_ms, ratio = fuse_speedup(unfused, fused, pairs)
        params = f"{count_params(unfused) / 1e6:.3f}M / {count_params(fused) / 1e6:.3f}M"
        lines.append(f"| {name} | {params} | {unfused_ms:.0f} | {fused_ms:.0f} | {ratio:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median of round medians)")
    parser.add_argument("--pairs", type=int, default=10, help="alternating unfused/fused forwards per model")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: stable timings on a CPU shared with other jobs)")
    parser.add_argument("--no-latency", action="store_true", help="skip latency (columns and the fuse table)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    names = [n for pair in PAIRS for n in pair]
    latency_ms = None if args.no_latency else fused_latencies(names, args.runs, args.rounds)
    print(f"# machine: {machine_summary()}; latency: batch 1, median of {args.rounds} rounds x {args.runs} runs\n")
    print("## RepViT feature extractors (P3/P4/P5) vs timm\n")
    print(backbone_table())
    print("\n## Detectors with a RepViT backbone vs their baselines\n")
    print(detector_table(latency_ms))
    if not args.no_latency:
        print(f"\n## Re-parameterization: fused vs unfused ({args.pairs} alternating pairs at 640)\n")
        print(fuse_table(args.pairs))


if __name__ == "__main__":
    main()
