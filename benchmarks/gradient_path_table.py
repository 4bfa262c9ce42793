"""Tables of docs/modules/gradient-path.md: YOLOv7 layout check, YOLOv7 costs vs published, YOLOv8 vs ELAN/PRN.

Usage: ``.venv/bin/python benchmarks/gradient_path_table.py [--runs 5] [--rounds 1] [--threads N] [--no-latency]``

1. Layout: our ``yolov7-af.yaml`` (one row per ELAN / MPConv / SPPCSPC) next to the official YOLOv7 layout
   written out row by row as YOLOv7's config has it (explicit Conv / Concat / max-pool rows, built by
   ``official_yolov7_cfg`` from the official row list). Output channels and strides are measured
   on both models; the official model's weights are then copied into ours by position and the
   outputs compared.
2. Cost: params and GFLOPs (``FlopCounterMode``, eval, batch 1, 640x640) of our yolov7 /
   yolov7-tiny, split into body and head, with the size of YOLOv7's own anchor head (IDetect)
   computed for comparison with the published totals.
3. YOLOv8 n/s vs the ELAN and PRN variants, with fused CPU latency at 640 (wall, median over ``--runs``
   after one warm-up, median over ``--rounds`` interleaved rounds: see ``_tables``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from _tables import Latency, latencies, model_cost, start, table_parser
from yololab.nn import DetectionModel
from yololab.utils.profile import count_params

COMPARED = ["yolov8n", "yolov8n-elan", "yolov8n-prn", "yolov8s", "yolov8s-elan", "yolov8s-prn", "yolov7-tiny-af",
            "yolov7-af"]
# Published totals (YOLOv7 paper, Table 2; MS COCO, 640): params, GFLOPs, with YOLOv7's IDetect head.
PUBLISHED = {"yolov7-af.yaml": (36.9e6, 104.7), "yolov7-tiny-af.yaml": (6.2e6, 13.8)}
IDETECT_CHANNELS = {"yolov7-af.yaml": (256, 512, 1024), "yolov7-tiny-af.yaml": (128, 256, 512)}

# Our yolov7-af.yaml row -> the official rows whose outputs, concatenated, equal our row's output.
# Neck MP rows have no single official output row: their output is the official [stride-2 conv, pool conv] pair,
# which the official config concatenates with the same-scale feature in its next row.
OUR_TO_OFFICIAL = {
    0: [0], 1: [1], 2: [2], 3: [3], 4: [11], 5: [16], 6: [24], 7: [29], 8: [37], 9: [42], 10: [50],
    11: [51], 12: [52], 13: [53], 14: [54], 15: [55], 16: [63], 17: [64], 18: [65], 19: [66], 20: [67],
    21: [75], 22: [79, 77], 23: [80], 24: [88], 25: [92, 90], 26: [93], 27: [101], 28: [102], 29: [103],
    30: [104],
}


def _elan_rows(hidden: int, c2: int) -> list:
    """Backbone ELAN: short 1x1, main 1x1, four 3x3, concat [-1, -3, -5, -6], 1x1 transition."""
    return [[-1, 1, "Conv", [hidden, 1, 1]], [-2, 1, "Conv", [hidden, 1, 1]],
            *([[-1, 1, "Conv", [hidden, 3, 1]]] * 4),
            [[-1, -3, -5, -6], 1, "Concat", [1]], [-1, 1, "Conv", [c2, 1, 1]]]


def _elan_h_rows(hidden: int, c2: int) -> list:
    """Head ELAN: two 1x1 to hidden, four 3x3 at hidden / 2, concat all six, 1x1 transition."""
    return [[-1, 1, "Conv", [hidden, 1, 1]], [-2, 1, "Conv", [hidden, 1, 1]],
            *([[-1, 1, "Conv", [hidden // 2, 3, 1]]] * 4),
            [[-1, -2, -3, -4, -5, -6], 1, "Concat", [1]], [-1, 1, "Conv", [c2, 1, 1]]]


def _mp_rows(c: int, same_scale: int | None = None) -> list:
    """MP-1 transition: max-pool -> 1x1, and 1x1 -> 3x3 stride 2 of the same input, concatenated."""
    concat = [-1, -3] if same_scale is None else [-1, -3, same_scale]
    return [[-1, 1, "nn.MaxPool2d", [2, 2]], [-1, 1, "Conv", [c, 1, 1]], [-3, 1, "Conv", [c, 1, 1]],
            [-1, 1, "Conv", [c, 3, 2]], [concat, 1, "Concat", [1]]]


def official_yolov7_cfg(nc: int = 80) -> dict:
    """YOLOv7's training layout row for row (RepConv as its deployed 3x3 Conv, IDetect as our Detect)."""
    backbone = [[-1, 1, "Conv", [32, 3, 1]], [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [64, 3, 1]],
                [-1, 1, "Conv", [128, 3, 2]],
                *_elan_rows(64, 256), *_mp_rows(128), *_elan_rows(128, 512), *_mp_rows(256),
                *_elan_rows(256, 1024), *_mp_rows(512), *_elan_rows(256, 1024)]
    upsample = [-1, 1, "nn.Upsample", [None, 2, "nearest"]]
    head = [[-1, 1, "SPPCSPC", [512]],
            [-1, 1, "Conv", [256, 1, 1]], upsample, [37, 1, "Conv", [256, 1, 1]], [[-1, -2], 1, "Concat", [1]],
            *_elan_h_rows(256, 256),
            [-1, 1, "Conv", [128, 1, 1]], upsample, [24, 1, "Conv", [128, 1, 1]], [[-1, -2], 1, "Concat", [1]],
            *_elan_h_rows(128, 128),
            *_mp_rows(128, 63), *_elan_h_rows(256, 256),
            *_mp_rows(256, 51), *_elan_h_rows(512, 512),
            [75, 1, "Conv", [256, 3, 1]], [88, 1, "Conv", [512, 3, 1]], [101, 1, "Conv", [1024, 3, 1]],
            [[102, 103, 104], 1, "Detect", [nc]]]
    if len(backbone) != 51 or len(head) != 55:
        raise AssertionError("official YOLOv7 layout must have rows 0-50 (backbone) and 51-105 (head)")
    return {"nc": nc, "backbone": backbone, "head": head, "yaml_file": "official-yolov7-rows"}


def row_shapes(model: DetectionModel, imgsz: int = 256) -> list[tuple[int, int]]:
    """(channels, stride) of every row output except the head, measured on an eval forward."""
    shapes: list[tuple[int, int]] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: shapes.append((o.shape[1], imgsz // o.shape[2])))
             for layer in model.model[:-1]]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, imgsz, imgsz))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def copy_weights_by_position(src: nn.Module, dst: nn.Module) -> None:
    """Load ``src``'s state_dict into ``dst`` entry by entry in order; every shape must match."""
    src_items, dst_keys = list(src.state_dict().items()), list(dst.state_dict())
    if len(src_items) != len(dst_keys):
        raise ValueError(f"state_dict sizes differ: {len(src_items)} vs {len(dst_keys)}")
    dst_state = dst.state_dict()
    for (src_key, value), dst_key in zip(src_items, dst_keys):
        if value.shape != dst_state[dst_key].shape:
            raise ValueError(f"{src_key} {tuple(value.shape)} does not fit {dst_key} {tuple(dst_state[dst_key].shape)}")
    dst.load_state_dict({k: v for k, (_, v) in zip(dst_keys, src_items)})


def _official_ranges() -> dict[int, str]:
    ranges, start = {}, 0
    for ours, rows in OUR_TO_OFFICIAL.items():
        end = max(rows)
        ranges[ours] = str(end) if start == end else f"{start}-{end}"
        start = end + 1
    return ranges


def layout_table(imgsz: int = 256) -> tuple[str, bool]:
    """Markdown table of our yolov7 rows vs the official rows (with the weight-copy check); also whether all agree."""
    ours, official = DetectionModel("yolov7-af.yaml"), DetectionModel(official_yolov7_cfg())
    ours_shapes, official_shapes = row_shapes(ours, imgsz), row_shapes(official, imgsz)
    lines = ["| our row | module | official rows | official output rows | ours: ch / stride | official: ch / stride "
             "| agree |", "|---|---|---|---|---|---|---|"]
    all_agree = True
    for (i, rows), span in zip(OUR_TO_OFFICIAL.items(), _official_ranges().values()):
        c, s = ours_shapes[i]
        oc = sum(official_shapes[j][0] for j in rows)
        os_ = {official_shapes[j][1] for j in rows}
        agree = c == oc and os_ == {s}
        all_agree &= agree
        lines.append(f"| {i} | {ours.table[i].module} | {span} | {', '.join(map(str, rows))} | {c} / {s} | "
                     f"{oc} / {'/'.join(map(str, sorted(os_)))} | {'yes' if agree else 'NO'} |")
    all_agree &= count_params(ours) == count_params(official)
    copy_weights_by_position(official, ours)
    x = torch.rand(1, 3, imgsz, imgsz)
    with torch.no_grad():
        diff = (ours.eval()(x) - official.eval()(x)).abs().max().item()
    lines.append(f"\nparams: ours {count_params(ours):,}, official rows {count_params(official):,}; "
                 f"official weights copied into ours by position, max |output difference| at {imgsz}: {diff:.3g}")
    return "\n".join(lines), all_agree and diff == 0


def idetect_cost(channels: tuple[int, ...], imgsz: int = 640, nc: int = 80, anchors: int = 3) -> tuple[int, float]:
    """Params and GFLOPs of YOLOv7's IDetect: a 1x1 conv to anchors * (5 + nc) per level plus ImplicitA/M vectors."""
    no = anchors * (5 + nc)
    params = sum(c * no + no + c + no for c in channels)
    flops = sum(2 * c * no * (imgsz // s) ** 2 for c, s in zip(channels, (8, 16, 32)))
    return params, flops / 1e9


def _body_and_head(model: DetectionModel, imgsz: int = 640) -> tuple[int, float, int, float]:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, imgsz, imgsz))
    counts = counter.get_flop_counts()
    head_gflops = sum(counts[f"DetectionModel.model.{len(model.model) - 1}"].values()) / 1e9
    total_gflops = sum(counts["Global"].values()) / 1e9
    head_params = count_params(model.head)
    return count_params(model) - head_params, total_gflops - head_gflops, head_params, head_gflops


def yolov7_cost_table() -> str:
    lines = ["| model | ours total: params / GFLOPs | ours body (no head) | our Detect head | "
             "body + IDetect (computed) | published (IDetect head) |", "|---|---|---|---|---|---|"]
    for cfg, (pub_params, pub_gflops) in PUBLISHED.items():
        model = DetectionModel(cfg)
        body_p, body_g, head_p, head_g = _body_and_head(model)
        id_p, id_g = idetect_cost(IDETECT_CHANNELS[cfg])
        lines.append(f"| {cfg[:-5]} | {count_params(model) / 1e6:.2f}M / {body_g + head_g:.1f} | "
                     f"{body_p / 1e6:.2f}M / {body_g:.1f} | {head_p / 1e6:.2f}M / {head_g:.1f} | "
                     f"{(body_p + id_p) / 1e6:.2f}M / {body_g + id_g:.1f} | {pub_params / 1e6:.1f}M / {pub_gflops} |")
    return "\n".join(lines)


def comparison_table(latency: dict[str, Latency] | None) -> str:
    lines = ["| model | params | GFLOPs@640 | CPU fused latency@640, median ms |", "|---|---|---|---|"]
    for name in COMPARED:
        params, gflops = model_cost(name)
        ms = "-" if latency is None else f"{latency[name].wall_ms:.0f}"
        lines.append(f"| {name} | {params:,} | {gflops:.2f} | {ms} |")
    return "\n".join(lines)


def main() -> None:
    args = table_parser(__doc__, threads=0).parse_args()
    start(args)
    torch.manual_seed(0)
    table, agree = layout_table()
    print(f"## yolov7-af.yaml vs the official YOLOv7 rows (all agree: {agree})\n\n{table}\n")
    print(f"## YOLOv7 cost vs published\n\n{yolov7_cost_table()}\n")
    latency = latencies(COMPARED, args, warmup=1)
    print(f"## YOLOv8 vs ELAN / PRN variants\n\n{comparison_table(latency)}")


if __name__ == "__main__":
    main()
