"""RevCol training memory and step time, plain autograd vs reversible (``save_memory``), vs columns.

For each column count and mode (plain; reversible with each ``--anchors`` setting), one training step
(forward, loss, backward, SGD step) of the RevCol-T backbone (widths 64/128/256/512, blocks 2/2/4/2,
drop path 0.1) is run in a fresh subprocess and reports:

- saved: bytes held for backward, i.e. tensors packed by ``torch.autograd.graph.saved_tensors_hooks``
  during the forward (deduplicated by storage, parameters excluded) plus the RNG snapshots the
  reversible function keeps on its context;
- peak: the step's peak memory above what was allocated before it, with the gradients already allocated
  (CUDA ``max_memory_allocated``; on CPU the increase of the process peak RSS, allocator slack included);
- time: median wall time of ``--steps`` timed steps after the warm-up step, and on CPU also the mean
  process CPU time per step (on a CPU shared with other jobs the wall time mostly measures the load).

On CPU the workers run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed buffers leave the process
and the peak RSS follows the live tensors instead of the allocator's high-water mark.

A second table checks numerics: the relative error of the column states rebuilt backwards from the
last column (float32 and bfloat16 autocast) and the relative difference of all gradients between the
modes, next to the difference bfloat16 itself makes in the plain mode.

    python benchmarks/revcol_memory.py                          # issue setting: batch 8, imgsz 640
    python benchmarks/revcol_memory.py --imgsz 320 --batch 4 --steps 1 --threads 1   # what a shared CPU manages
    python benchmarks/revcol_memory.py --device cuda --amp
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from yololab.nn import load_model_yaml
from yololab.nn.parse import build_layers
from yololab.nn.revcol import REVCOL_VARIANTS, RevCol, reconstruction_errors
from yololab.utils.profile import time_calls


def level_config(variant: str) -> tuple[list[int], list[int]]:
    """Level widths and blocks of a paper variant (``T``) or of the RevCol row of a model YAML."""
    if variant in REVCOL_VARIANTS:
        channels, layers, _ = REVCOL_VARIANTS[variant]
        return list(channels), list(layers)
    with torch.device("meta"):
        backbone = build_layers(load_model_yaml(variant))[0][0]
    if not isinstance(backbone, RevCol):
        raise ValueError(f"{variant}: row 0 is {type(backbone).__name__}, not RevCol")
    return backbone.level_channels, backbone.layers


def build(columns: int, anchor_every: int | None, args: argparse.Namespace) -> RevCol:
    """The benchmarked backbone; ``anchor_every`` None is the plain mode."""
    torch.manual_seed(0)
    channels, layers = level_config(args.variant)
    net = RevCol(3, channels, layers, columns, drop_path=args.drop_path, save_memory=anchor_every is not None,
                 anchor_every=anchor_every or 0)
    return net.to(args.device).train()


def forward_loss(net: RevCol, images: torch.Tensor, amp: bool) -> tuple[list, torch.Tensor]:
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        outputs = net(images)
    return outputs, sum(o.float().square().mean() for o in outputs)


def train_step(net: RevCol, optimizer: torch.optim.Optimizer, images: torch.Tensor, amp: bool) -> None:
    optimizer.zero_grad(set_to_none=False)
    forward_loss(net, images, amp)[1].backward()
    optimizer.step()


def saved_bytes_of_step(net: RevCol, optimizer: torch.optim.Optimizer, images: torch.Tensor, amp: bool) -> int:
    """Run one training step; return the bytes its forward left for backward (parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    optimizer.zero_grad(set_to_none=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs, loss = forward_loss(net, images, amp)
    rng = getattr(outputs[0].grad_fn, "rng", [])  # RNG snapshots kept by the reversible function
    saved = sum(storages.values()) + sum(snapshot.nbytes for column in rng for snapshot in column)
    loss.backward()
    optimizer.step()
    return saved


def _current_memory(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(columns: int, anchor_every: int | None, args: argparse.Namespace) -> dict:
    """One configuration (``anchor_every`` None: plain autograd) in the current process; call it in a
    fresh process for a clean CPU peak."""
    device = torch.device(args.device)
    net = build(columns, anchor_every, args)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4)
    for p in net.parameters():  # gradients exist before the step: the peak is the step's working memory
        p.grad = torch.zeros_like(p)
    images = torch.randn(args.batch, 3, args.imgsz, args.imgsz, device=device)
    before = _current_memory(device)
    saved = saved_bytes_of_step(net, optimizer, images, args.amp)  # also the warm-up step
    cpu0 = time.process_time()
    wall = time_calls(lambda: train_step(net, optimizer, images, args.amp), warmup=0, runs=args.steps,
                      sync=(lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None)
    return {"params": sum(p.numel() for p in net.parameters()), "saved": saved,
            "peak": _peak_memory(device) - before, "time": wall["median_ms"] / 1000,
            "cpu": (time.process_time() - cpu0) / args.steps}


def measure_isolated(columns: int, anchor_every: int | None, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "plain" if anchor_every is None else str(anchor_every),
           "--columns", str(columns), "--variant", args.variant, "--imgsz", str(args.imgsz),
           "--batch", str(args.batch), "--steps", str(args.steps), "--drop-path", str(args.drop_path),
           "--device", args.device, "--threads", str(args.threads)] + (["--amp"] if args.amp else [])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536") if args.device == "cpu" else None
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{mode_name(anchor_every)} with {columns} columns failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mode_name(anchor_every: int | None) -> str:
    if anchor_every is None:
        return "plain"
    return "reversible" + (f", anchor_every={anchor_every}" if anchor_every else "")


def _flat_grads(net: RevCol, images: torch.Tensor, amp: bool) -> torch.Tensor:
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    forward_loss(net, images, amp)[1].backward()
    return torch.cat([p.grad.flatten().float() for p in net.parameters()])


def numerics(columns: int, anchors: list[int], args: argparse.Namespace) -> dict:
    """State rebuild errors and gradient differences (reversible vs plain) at the check size."""
    net = build(columns, None, args)
    images = torch.randn(args.check_batch, 3, args.check_imgsz, args.check_imgsz, device=args.device)
    net.eval()
    row = {"rebuild fp32": max(reconstruction_errors(net, images), default=0.0),
           "rebuild bf16": max(reconstruction_errors(net, images, torch.bfloat16), default=0.0)}
    net.train()
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    plain = {amp: _flat_grads(net, images, amp) for amp in (False, True)}
    net.save_memory = True
    for anchor_every in anchors:
        net.anchor_every = anchor_every
        for amp, dtype in ((False, "fp32"), (True, "bf16")):
            row[f"grad {dtype}, anchor_every={anchor_every}"] = rel(_flat_grads(net, images, amp), plain[amp])
    row["grad bf16 vs fp32, plain"] = rel(plain[True], plain[False])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--columns", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--anchors", type=int, nargs="+", default=[0, 2],
                        help="anchor_every settings of the reversible mode (0: only the last column kept)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast in the memory table")
    parser.add_argument("--variant", default="T",
                        help=f"level widths/blocks: {', '.join(REVCOL_VARIANTS)} or a model YAML (yolov8n-revcol)")
    parser.add_argument("--drop-path", type=float, default=0.1)
    parser.add_argument("--check-imgsz", type=int, default=128, help="image size of the numerics table")
    parser.add_argument("--check-batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-numerics", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        anchor_every = None if args.worker == "plain" else int(args.worker)
        print(json.dumps(measure(args.columns[0], anchor_every, args)))
        return

    name = "CPU" if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    channels, layers = level_config(args.variant)
    step = "" if args.skip_memory else (f"batch {args.batch}, imgsz {args.imgsz}, "
                                        f"{'bf16 autocast' if args.amp else 'float32'}, ")
    print(f"{args.variant}: widths {channels}, blocks {layers}, drop path {args.drop_path}, {step}{name}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    if not args.skip_memory:
        memory_table(args)
    if not args.skip_numerics:
        numerics_table(args)


def memory_table(args: argparse.Namespace) -> None:
    cpu = args.device == "cpu"
    print(f"| columns | mode | params | saved for backward | vs plain | step peak | vs plain "
          f"| {'step CPU time (wall)' if cpu else 'step time'} | vs plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
    key = "cpu" if cpu else "time"
    for columns in args.columns:
        plain = None
        for anchor_every in [None, *args.anchors]:
            r = measure_isolated(columns, anchor_every, args)
            plain = plain or r
            secs = f"{r['cpu']:.1f} s ({r['time']:.1f} s)" if cpu else f"{r['time'] * 1000:.0f} ms"
            print(f"| {columns} | {mode_name(anchor_every)} | {r['params'] / 1e6:.1f}M | {mib(r['saved'])} "
                  f"| {r['saved'] / plain['saved']:.2f} | {mib(r['peak'])} | {r['peak'] / plain['peak']:.2f} "
                  f"| {secs} | {r[key] / plain[key] - 1:+.0%} |", flush=True)


def numerics_table(args: argparse.Namespace) -> None:
    print(f"\nNumerics at batch {args.check_batch}, imgsz {args.check_imgsz}, relative errors. rebuild: worst "
          "column state rebuilt from the last column alone (eval mode); grad: all gradients of the reversible "
          "mode vs the plain mode in the same precision (train mode, drop path as in the header).\n")
    rows = [(columns, numerics(columns, args.anchors, args)) for columns in args.columns]
    print("| columns | " + " | ".join(rows[0][1]) + " |")
    print("|---|" + "---|" * len(rows[0][1]))
    for columns, row in rows:
        print(f"| {columns} | " + " | ".join(f"{v:.1e}" for v in row.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
