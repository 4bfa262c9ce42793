"""Shared parts of the module tables (``*_table.py``): arguments, machine header, latency rounds, cost table.

Timing runs on ``--threads`` torch threads and reports, per model, the median over ``--rounds`` rounds of
``measure_latency`` medians (fused, batch 1) as wall and process CPU milliseconds. Models are interleaved within a
round, so a drifting load on a shared CPU hits all of them alike; the CPU time is the number that stays comparable
when other jobs share the machine, the wall time mostly measures that load.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from yololab.nn import DetectionModel
from yololab.utils.profile import count_gflops, count_params, machine_summary, measure_latency


@dataclass
class Latency:
    """Median milliseconds per forward of one model."""

    wall_ms: float
    cpu_ms: float


def table_parser(doc: str, *, rounds: int = 1, threads: int = 1) -> argparse.ArgumentParser:
    """``--runs``, ``--rounds``, ``--threads`` and ``--no-latency`` with a script's defaults; its first doc line
    as the description."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model per round")
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds (median of round medians)")
    parser.add_argument("--threads", type=int, default=threads,
                        help="torch intra-op threads (0: torch's choice; 1: stable timings on a shared CPU)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency columns")
    return parser


def start(args: argparse.Namespace) -> None:
    """Set the torch threads and print where and how the numbers are measured."""
    if args.threads:
        torch.set_num_threads(args.threads)
    timing = ("not measured (--no-latency)" if args.no_latency
              else f"batch 1, fused, median of {args.rounds} rounds x {args.runs} runs")
    print(f"# machine: {machine_summary()}; timing: {timing}\n")


def _threads_label(args: argparse.Namespace) -> str:
    """How many torch threads timed the models, for column headers: "1 thread", "2 threads", ..."""
    if not args.threads:
        return "torch's default threads"
    return "1 thread" if args.threads == 1 else f"{args.threads} threads"


def cpu_and_wall_columns(args: argparse.Namespace) -> dict[str, Callable[[Latency], str]]:
    """``cost_table`` columns: process CPU time and wall time per image."""
    threads = _threads_label(args)
    return {f"CPU time @640, {threads} (ms)": lambda t: f"{t.cpu_ms:.0f}",
            f"wall @640, {threads} (ms)": lambda t: f"{t.wall_ms:.0f}"}


def latencies(names: Sequence[str], args: argparse.Namespace, *, warmup: int = 2,
              imgsz: int = 640) -> dict[str, Latency] | None:
    """Per model (config name without ``.yaml``): median over ``args.rounds`` rounds of wall and CPU medians,
    models interleaved within each round; None with ``--no-latency``."""
    if args.no_latency:
        return None
    models = {name: DetectionModel(f"{name}.yaml") for name in names}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, model in models.items():
            samples[name].append(measure_latency(model, imgsz, warmup=warmup, runs=args.runs))
    return {name: Latency(statistics.median(t["median_ms"] for t in s),
                          statistics.median(t["cpu_median_ms"] for t in s)) for name, s in samples.items()}


def model_cost(name: str, imgsz: int = 640) -> tuple[int, float]:
    """Params and GFLOPs (``FlopCounterMode``, eval, batch 1) of a model config (name without ``.yaml``)."""
    model = DetectionModel(f"{name}.yaml")
    return count_params(model), count_gflops(model, imgsz)


def cost_table(groups: Sequence[Sequence[str]], latency: dict[str, Latency] | None,
               columns: dict[str, Callable[[Latency], str]]) -> str:
    """Params, GFLOPs @640 and the change against each group's first model (its baseline), then one column per
    ``columns`` entry (header: formatter of the model's latency; "not measured" without latencies)."""
    lines = ["| model | params | GFLOPs @640 | vs baseline (params / GFLOPs) | " + " | ".join(columns) + " |",
             "|---|---|---|---|" + "---|" * len(columns)]
    for group in groups:
        costs = {name: model_cost(name) for name in group}
        base_params, base_gflops = costs[group[0]]
        for name, (params, gflops) in costs.items():
            delta = ("-" if name == group[0]
                     else f"{100 * (params / base_params - 1):+.1f}% / {100 * (gflops / base_gflops - 1):+.1f}%")
            timing = [fmt(latency[name]) if latency else "not measured" for fmt in columns.values()]
            lines.append(f"| {name} | {params / 1e6:.3f}M | {gflops:.2f} | {delta} | " + " | ".join(timing) + " |")
    return "\n".join(lines)
