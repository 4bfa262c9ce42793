"""Tables of docs/modules/revcol.md: yolov8-revcol vs yolov8 cost, and our RevCol-T/S backbones vs the paper.

Usage: ``.venv/bin/python benchmarks/revcol_table.py [--runs 5] [--rounds 1] [--threads 1] [--no-latency]``

1. Params, GFLOPs (``FlopCounterMode``, eval, batch 1, 640x640) and CPU latency of the fused model,
   median over ``--runs`` forwards after one warm-up (median over ``--rounds`` interleaved rounds, see
   ``_tables``), reported as process CPU time with the wall time in brackets (on a CPU shared with other jobs
   the wall time mostly measures the load).
2. The bare RevCol-T/S backbones at 224x224 next to the paper's ImageNet numbers. The paper counts
   multiply-accumulates (fvcore) and includes its classifier; ``FlopCounterMode`` counts 2 FLOPs per
   multiply-accumulate, so GFLOPs / 2 is the comparable figure.
"""

from __future__ import annotations

from _tables import latencies, model_cost, start, table_parser
from yololab.nn.revcol import REVCOL_VARIANTS, RevCol
from yololab.utils.profile import count_gflops, count_params

MODELS = ["yolov8n", "yolov8n-revcol", "yolov8s", "yolov8s-revcol"]
# megvii-research/RevCol README, ImageNet-1K 224: params, GMACs, top-1
PAPER = {"T": (30e6, 4.5, 82.2), "S": (60e6, 9.0, 83.5)}


def main() -> None:
    args = table_parser(__doc__).parse_args()
    start(args)
    latency = latencies(MODELS, args, warmup=1)
    print("| model | params | GFLOPs 640 | CPU ms 640 (wall) |")
    print("|---|---|---|---|")
    for name in MODELS:
        params, gflops = model_cost(name)
        ms = "-" if latency is None else f"{latency[name].cpu_ms:.0f} ({latency[name].wall_ms:.0f})"
        print(f"| {name} | {params / 1e6:.2f}M | {gflops:.2f} | {ms} |", flush=True)
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
