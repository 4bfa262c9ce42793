"""Table of docs/modules/spconv.md: the SPConv configs against their baselines.

Usage: ``.venv/bin/python benchmarks/spconv_table.py [--runs 5] [--rounds 2] [--threads 1] [--no-latency]``

Params, GFLOPs (``FlopCounterMode``, eval, batch 1, 640x640; it counts convolutions, not the pooling and softmax
of the fusion) and the process CPU time and wall time per image of the fused model (see ``_tables``).
"""

from __future__ import annotations

from _tables import cost_table, cpu_and_wall_columns, latencies, start, table_parser

SPCONV_PAIRS = [("yolov8n", "yolov8n-spconv"), ("yolov8s", "yolov8s-spconv")]


def main() -> None:
    args = table_parser(__doc__, rounds=2).parse_args()
    start(args)
    latency = latencies([n for pair in SPCONV_PAIRS for n in pair], args)
    print("## SPConv vs baselines\n")
    print(cost_table(SPCONV_PAIRS, latency, cpu_and_wall_columns(args)))


if __name__ == "__main__":
    main()
