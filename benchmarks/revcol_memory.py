"""RevCol training memory and step time, plain autograd vs reversible (``save_memory``), vs columns.

For each column count and mode, one training step (forward, loss, backward, SGD step) of the RevCol-T
backbone (widths 64/128/256/512, blocks 2/2/4/2, drop path 0.1) is run in a fresh subprocess and
reports:

- saved: bytes held for backward, i.e. tensors packed by ``torch.autograd.graph.saved_tensors_hooks``
  during the forward (deduplicated by storage, parameters excluded) plus the RNG snapshots the
  reversible function keeps on its context;
- peak: the step's peak memory above what was allocated before it, with the gradients already allocated
  (CUDA ``max_memory_allocated``; on CPU the increase of the process peak RSS, allocator slack included);
- time: median step time over ``--steps`` timed steps after one warm-up step.

A second table checks numerics: the relative error of the column states rebuilt backwards from the
last column (float32 and bfloat16 autocast) and the relative difference of all gradients between the
two modes, next to the difference bfloat16 itself makes in the plain mode.

    python benchmarks/revcol_memory.py                          # issue setting: batch 8, imgsz 640
    python benchmarks/revcol_memory.py --imgsz 320 --batch 2    # what a 2-core CPU manages
    python benchmarks/revcol_memory.py --device cuda --amp
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from yololab.nn.revcol import REVCOL_VARIANTS, RevCol, reconstruction_errors

MODES = ("plain", "reversible")


def build(columns: int, save_memory: bool, args: argparse.Namespace) -> RevCol:
    torch.manual_seed(0)
    channels, layers, _ = REVCOL_VARIANTS[args.variant]
    net = RevCol(3, channels, layers, columns, drop_path=args.drop_path, save_memory=save_memory)
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(columns: int, mode: str, args: argparse.Namespace) -> dict:
    """One configuration in the current process (call it in a fresh process for a clean CPU peak)."""
    device = torch.device(args.device)
    net = build(columns, mode == "reversible", args)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4)
    for p in net.parameters():  # gradients exist before the step: the peak is the step's working memory
        p.grad = torch.zeros_like(p)
    images = torch.randn(args.batch, 3, args.imgsz, args.imgsz, device=device)
    before = _current_memory(device)
    saved = saved_bytes_of_step(net, optimizer, images, args.amp)  # also the warm-up step
    times = []
    for _ in range(args.steps):
        _sync(device)
        t0 = time.perf_counter()
        train_step(net, optimizer, images, args.amp)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"columns": columns, "mode": mode, "params": sum(p.numel() for p in net.parameters()),
            "saved": saved, "peak": _peak_memory(device) - before, "time": statistics.median(times)}


def measure_isolated(columns: int, mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--columns", str(columns), "--variant", args.variant,
           "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--steps", str(args.steps),
           "--drop-path", str(args.drop_path), "--device", args.device, "--threads", str(args.threads)]
    cmd += ["--amp"] if args.amp else []
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{mode} with {columns} columns failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _flat_grads(net: RevCol, images: torch.Tensor, amp: bool) -> torch.Tensor:
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    forward_loss(net, images, amp)[1].backward()
    return torch.cat([p.grad.flatten().float() for p in net.parameters()])


def numerics(columns: int, args: argparse.Namespace) -> dict:
    """State rebuild errors and gradient differences (reversible vs plain) at the check size."""
    net = build(columns, False, args)
    images = torch.randn(args.check_batch, 3, args.check_imgsz, args.check_imgsz, device=args.device)
    row = {"columns": columns}
    net.eval()
    row["rebuild_fp32"] = max(reconstruction_errors(net, images))
    row["rebuild_bf16"] = max(reconstruction_errors(net, images, torch.bfloat16))
    net.train()
    grads = {}
    for amp in (False, True):
        for save_memory in (False, True):
            net.save_memory = save_memory
            grads[amp, save_memory] = _flat_grads(net, images, amp)
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    row["grad_fp32"] = rel(grads[False, True], grads[False, False])
    row["grad_bf16"] = rel(grads[True, True], grads[True, False])
    row["bf16_vs_fp32_plain"] = rel(grads[True, False], grads[False, False])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--columns", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast in the memory table")
    parser.add_argument("--variant", default="T", choices=sorted(REVCOL_VARIANTS))
    parser.add_argument("--drop-path", type=float, default=0.1)
    parser.add_argument("--check-imgsz", type=int, default=128, help="image size of the numerics table")
    parser.add_argument("--check-batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--skip-numerics", action="store_true")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args.columns[0], args.worker, args)))
        return

    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"RevCol-{args.variant} widths/blocks, drop path {args.drop_path}, batch {args.batch}, imgsz {args.imgsz}, "
          f"{'bf16 autocast' if args.amp else 'float32'}, {name}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}\n")
    print("| columns | params | saved for backward, plain | reversible | ratio | step peak, plain | reversible "
          "| ratio | step time, plain | reversible | overhead |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
    for columns in args.columns:
        plain, rev = (measure_isolated(columns, mode, args) for mode in MODES)
        print(f"| {columns} | {plain['params'] / 1e6:.1f}M | {mib(plain['saved'])} | {mib(rev['saved'])} "
              f"| {rev['saved'] / plain['saved']:.2f} | {mib(plain['peak'])} | {mib(rev['peak'])} "
              f"| {rev['peak'] / plain['peak']:.2f} | {plain['time']:.2f} s | {rev['time']:.2f} s "
              f"| {rev['time'] / plain['time'] - 1:+.0%} |", flush=True)
    if args.skip_numerics:
        return
    print(f"\nNumerics at batch {args.check_batch}, imgsz {args.check_imgsz} (relative errors; rebuild = worst "
          "column state rebuilt from the last column, eval mode; grad = all gradients, reversible vs plain, "
          "train mode with drop path)\n")
    print("| columns | rebuild fp32 | rebuild bf16 autocast | grad fp32 | grad bf16 autocast "
          "| bf16 vs fp32 grad, plain mode |")
    print("|---|---|---|---|---|---|")
    for columns in args.columns:
        r = numerics(columns, args)
        print(f"| {columns} | {r['rebuild_fp32']:.1e} | {r['rebuild_bf16']:.1e} | {r['grad_fp32']:.1e} "
              f"| {r['grad_bf16']:.1e} | {r['bf16_vs_fp32_plain']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
