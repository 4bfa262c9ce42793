"""Distributed (DDP) helpers: rank discovery from torchrun's environment, process group set-up, launching."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist


def rank() -> int:
    """Global rank, -1 when not launched by torchrun."""
    return int(os.environ.get("RANK", -1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", -1))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    """True on the process that logs and writes files (rank 0, or the only process)."""
    return rank() in (-1, 0)


def device_list(device) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``; ``"cpu"``, ``0`` or empty -> one entry (or none)."""
    return [d.strip() for d in str(device if device is not None else "").split(",") if d.strip()]


def init_distributed(device: torch.device) -> None:
    """Join the process group torchrun described (NCCL on CUDA, gloo on CPU)."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank(), world_size=world_size())


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (an early-stop decision, the run folder); ``value`` itself without DDP."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_torchrun(argv: list[str], nproc: int) -> int:
    """Run ``python -m yololab <argv>`` under ``torchrun --nproc_per_node nproc`` on this machine; return its code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(free_port()), "-m", "yololab", *argv]
    print("DDP: " + " ".join(cmd[2:]))
    return subprocess.run(cmd).returncode
