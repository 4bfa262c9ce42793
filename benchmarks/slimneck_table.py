"""Tables of docs/modules/slimneck.md: the slim-neck configs against their baselines and the paper's numbers.

Usage: ``.venv/bin/python benchmarks/slimneck_table.py [--runs 5] [--rounds 2] [--threads 1] [--no-latency]``

1. Params, GFLOPs (``FlopCounterMode``, eval, batch 1, 640x640) and the process CPU time and wall time per image
   of the fused model for the slim-neck configs next to their baselines (see ``_tables``). The SPConv table is
   printed by ``spconv_table.py``.
2. The paper's comparison: the slim-neck paper counts YOLOv5 with its anchor-based head (three 1x1
   convs to ``3 * (5 + nc)`` channels). Our body (everything but Detect) plus that head, computed,
   is set next to the published numbers, and so is the parameter count the authors' code would
   report: it also builds, in every VoVGSCSP, a 3x3 conv (``res``) that its forward never uses.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from _tables import cost_table, cpu_and_wall_columns, latencies, start, table_parser
from yololab.nn import DetectionModel
from yololab.nn.slimneck import VoVGSCSP
from yololab.utils.profile import count_params

SLIMNECK_PAIRS = [("yolov5n", "yolov5n-slimneck"), ("yolov8n", "yolov8n-slimneck"), ("yolov8s", "yolov8s-slimneck")]
# Slim-neck README / paper, MS COCO 640, anchor-based YOLOv5 head: (params, GFLOPs) baseline -> slim-neck.
PUBLISHED = {"yolov5n": ((1.9e6, 4.5), (1.8e6, 4.0)), "yolov5s": ((7.2e6, 16.4), (7.0e6, 14.5))}


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
    args = table_parser(__doc__, rounds=2).parse_args()
    start(args)
    latency = latencies([n for pair in SLIMNECK_PAIRS for n in pair], args)
    print("## Slim-neck vs baselines\n")
    print(cost_table(SLIMNECK_PAIRS, latency, cpu_and_wall_columns(args)))
    print("\n## Slim-neck against the paper's numbers (params / GFLOPs at 640)\n")
    print(paper_table())


if __name__ == "__main__":
    main()
