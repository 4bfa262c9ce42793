"""Where a training epoch's time goes: convolutions (forward + backward), the other model ops, loader wait,
augmentation, assigner, loss, gradient check, optimizer, EMA and the rest, from the PyTorch profiler.

Runs ``yololab train`` for two epochs on a share of the train images and profiles the second (the first warms up:
loader start, torch.compile's compilation, allocator). The parts of the step are labelled by wrapping the functions
that do them (the dataset's ``__getitem__``, the loader's ``__next__``, the model's ``forward``, ``Tensor.backward``,
the loss, the assigner, ``ModelEMA.update``, the optimizer step), so the library itself carries no profiling code.
Convolution time is the self time of the convolution kernels; the other model ops are the forward and backward
minus it. With ``--workers 0`` (the default here) augmentation runs in this process and is measured; with workers
it runs in their processes and only the wait for a batch shows. Proportions hold on a loaded machine; absolute
times only on an idle one.

    python benchmarks/train_profile.py                            # yolov8n, BCCD (1/4 of train), 320 px, batch 16
    python benchmarks/train_profile.py --amp bf16 --compile       # bf16 autocast, compiled forward
    python benchmarks/train_profile.py --fraction 0.1 --imgsz 160 # a quick check
    python benchmarks/train_profile.py --nan-fill                 # "before": deterministic mode's NaN filling on
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import dataloader

from train_vs_peer import DEFAULT_DATA, subset_data
from yololab.anchor_loss import AnchorDetectionLoss
from yololab.assigner import TaskAlignedAssigner
from yololab.data import YoloDataset
from yololab.engine import trainer as trainer_module
from yololab.engine.trainer import Trainer
from yololab.health import RunHealth
from yololab.loss import DetectionLoss
from yololab.nn import DetectionModel
from yololab.utils.profile import machine_summary
from yololab.utils.torch_utils import CompiledModel, ModelEMA

EPOCH = "epoch"
# (label, owner, attribute): the functions whose calls make up each labelled part of a training step
LABELLED = (
    ("loader", dataloader._BaseDataLoaderIter, "__next__"),
    ("augmentation", YoloDataset, "__getitem__"),
    ("backward", torch.Tensor, "backward"),
    ("loss", DetectionLoss, "forward"),
    ("loss", AnchorDetectionLoss, "forward"),
    ("assigner", TaskAlignedAssigner, "forward"),
    ("optimizer", Trainer, "_optimizer_step"),
    ("gradient check", RunHealth, "check_gradients"),
    ("EMA", ModelEMA, "update"),
)
# the model forward: the compiled module's call with compile=true (a range inside a compiled graph is no option)
FORWARD = {False: (DetectionModel, "forward"), True: (CompiledModel, "__call__")}


def labelled(label: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with record_function(label):
            return fn(*args, **kwargs)
    return call


def patch(stack: ExitStack, owner: type, name: str, wrapper: Callable) -> None:
    """Replace ``owner.name`` by ``wrapper(original)`` for as long as ``stack`` is open."""
    original = getattr(owner, name)
    setattr(owner, name, wrapper(original))
    stack.callback(setattr, owner, name, original)


def profiled_second_call(prof: profile, fn: Callable) -> Callable:
    """``fn`` whose second call (the second epoch) runs in the profiler, as the range ``EPOCH``."""
    calls = []

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) != 2:
            return fn(*args, **kwargs)
        prof.start()
        try:
            with record_function(EPOCH):
                return fn(*args, **kwargs)
        finally:
            prof.stop()
    return call


def is_convolution(op: str) -> bool:
    return "conv" in op.lower() and not op.startswith("aten::_convert")


def shares(prof: profile) -> dict[str, float]:
    """Milliseconds of each part of the profiled epoch (the parts add up to the epoch's time)."""
    inclusive, conv = {}, 0.0
    for event in prof.key_averages():
        if event.key in {EPOCH, "forward", *(label for label, _, _ in LABELLED)}:
            inclusive[event.key] = event.cpu_time_total / 1000
        elif is_convolution(event.key):
            conv += event.self_cpu_time_total / 1000
    get = inclusive.get
    parts = {
        "convolution (fwd+bwd)": conv,
        "other model ops (fwd+bwd)": get("forward", 0) + get("backward", 0) - conv,
        "loader wait": get("loader", 0) - get("augmentation", 0),
        "images: decode + augment (this process)": get("augmentation", 0),
        "assigner": get("assigner", 0),
        "loss (without assigner)": get("loss", 0) - get("assigner", 0),
        "gradient check": get("gradient check", 0),
        "optimizer (step, clip, zero_grad)": get("optimizer", 0) - get("EMA", 0) - get("gradient check", 0),
        "EMA": get("EMA", 0),
    }
    parts["other (Python, logging, transfers)"] = get(EPOCH, 0) - sum(parts.values())
    return {"epoch": get(EPOCH, 0), **parts}


def top_ops(prof: profile, n: int) -> list[tuple[str, float]]:
    """The ``n`` operators with the most self time (milliseconds): what the model-op parts are made of."""
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / 1000) for e in events[:n]]


def with_nan_fill(init_seeds: Callable) -> Callable:
    """``init_seeds`` that leaves deterministic mode's NaN filling of new tensors on, as torch has it by default
    (yololab turns it off since the first profile; this reproduces the profile from before)."""

    @functools.wraps(init_seeds)
    def call(seed: int = 0, deterministic: bool = True) -> None:
        init_seeds(seed, deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = deterministic

    return call


def profile_epoch(args) -> tuple[profile, int]:
    """Train 2 epochs, profile the second; the profile and the epoch's number of steps."""
    with tempfile.TemporaryDirectory(prefix="train_profile-") as folder:
        return _profile_epoch(args, Path(folder))


def _profile_epoch(args, work: Path) -> tuple[profile, int]:
    data = subset_data(args.data, args.fraction, work / "data")
    settings = {"model": f"{args.model}.yaml", "data": str(data), "epochs": 2, "imgsz": args.imgsz,
                "batch": args.batch, "workers": args.workers, "device": args.device, "amp": args.amp,
                "compile": args.compile, "project": str(work), "name": "train", "plots": False,
                "val": args.val, "verbose": False}
    prof = profile(activities=[ProfilerActivity.CPU])
    with ExitStack() as stack:
        for label, owner, name in (*LABELLED, ("forward", *FORWARD[args.compile])):
            patch(stack, owner, name, functools.partial(labelled, label))
        patch(stack, Trainer, "_train_one_epoch", functools.partial(profiled_second_call, prof))
        if args.nan_fill:
            patch(stack, trainer_module, "init_seeds", with_nan_fill)
        trainer = Trainer(settings)
        trainer.train()
    return prof, len(trainer.train_loader)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", default="yolov8n")
    p.add_argument("--fraction", type=float, default=0.25, help="share of the train images (one epoch of them)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=0, help="0: augmentation in this process, where it is measured")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="auto", help="auto, false or bf16 (yololab train amp=)")
    p.add_argument("--compile", action="store_true", help="compile=true (the first, unprofiled epoch compiles)")
    p.add_argument("--val", action="store_true", help="validate after each epoch (adds the per-step gradient check)")
    p.add_argument("--nan-fill", action="store_true",
                   help="keep deterministic mode's NaN filling of new tensors on (the profile before it was removed)")
    p.add_argument("--top", type=int, default=10, help="also list the operators with the most self time")
    args = p.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data} not found (../shared/datasets/bccd is expected beside the checkout)")
    prof, steps = profile_epoch(args)
    parts = shares(prof)
    epoch = parts.pop("epoch")
    print(f"{args.model} on {args.data.parent.name} (fraction {args.fraction}), {args.imgsz} px, batch {args.batch}, "
          f"workers {args.workers}, amp={args.amp}, compile={args.compile}: the 2nd epoch, {steps} steps, "
          f"{epoch / 1000:.1f} s; {machine_summary()}\n")
    print("| part | ms per step | share |\n|---|---|---|")
    for name, ms in parts.items():
        print(f"| {name} | {ms / steps:.1f} | {ms / epoch:.1%} |")
    if args.top:
        print("\n| operator (self time) | ms per step | share |\n|---|---|---|")
        for name, ms in top_ops(prof, args.top):
            print(f"| {name} | {ms / steps:.1f} | {ms / epoch:.1%} |")


if __name__ == "__main__":
    sys.exit(main())
