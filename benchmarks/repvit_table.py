"""Tables of docs/modules/repvit.md: RepViT variants against timm, and the RepViT configs against their baselines.

Usage: ``.venv/bin/python benchmarks/repvit_table.py [--runs 5] [--rounds 3] [--pairs 10] [--threads 1] [--no-latency]``

1. Backbones: parameters of our RepViT feature extractor (stem + 4 stages, P3/P4/P5 out) next to timm's
   ``repvit_m*`` with ``features_only=True, out_indices=(1, 2, 3)``, GFLOPs at 224, fused parameters.
2. Detectors: params, GFLOPs (``FlopCounterMode``, eval, batch 1, 640x640) and fused CPU latency at 640
   (median over ``rounds`` rounds of ``measure_latency`` medians, models interleaved: see ``_tables``).
3. Re-parameterization of the RepViT configs: unfused and fused copies timed alternately, forward by
   forward, and the median of the per-pair fused/unfused latency ratios.
"""

from __future__ import annotations

import copy
import statistics
import time

import timm
import torch
from torch import nn

from _tables import Latency, cost_table, latencies, start, table_parser
from yololab.nn import DetectionModel
from yololab.nn.repvit import VARIANTS, RepViT
from yololab.utils.profile import count_gflops, count_params

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


def detector_table(latency: dict[str, Latency] | None) -> str:
    return cost_table(PAIRS, latency, {"CPU ms @640, fused": lambda t: f"{t.wall_ms:.0f}"})


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
    parser = table_parser(__doc__, rounds=3)
    parser.add_argument("--pairs", type=int, default=10, help="alternating unfused/fused forwards per model")
    args = parser.parse_args()  # --no-latency also skips the fuse table
    start(args)
    latency = latencies([n for pair in PAIRS for n in pair], args)
    print("## RepViT feature extractors (P3/P4/P5) vs timm\n")
    print(backbone_table())
    print("\n## Detectors with a RepViT backbone vs their baselines\n")
    print(detector_table(latency))
    if not args.no_latency:
        print(f"\n## Re-parameterization: fused vs unfused ({args.pairs} alternating pairs at 640)\n")
        print(fuse_table(args.pairs))


if __name__ == "__main__":
    main()
