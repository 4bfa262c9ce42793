"""Multi-node DDP on CPU: two `torchrun --nnodes 2` launches (one process each, gloo, one c10d rendezvous on
127.0.0.1) train the same weights as one `torchrun --nproc-per-node 2` launch, and global rank 0 alone writes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT
from tiny_training import TINY_MODEL, tiny_dataset
from yololab.utils.dist import free_port

pytestmark = [
    pytest.mark.slow,  # three torchrun launches: about a minute on 2 cores
    pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                       reason="torch.distributed with gloo is not available"),
]


def torchrun(nnodes: int, nproc: int, port: int, train_args: list[str]) -> list[str]:
    """The documented launch (docs/training.md): every node runs this with the same rendezvous endpoint."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--local-addr", "127.0.0.1",
            "-m", "yololab", "train", *train_args]


def test_two_nodes_train_the_weights_of_one_node_with_two_processes(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    model = tmp_path / "tiny.yaml"
    model.write_text(yaml.safe_dump(TINY_MODEL))
    project = tmp_path / "runs"

    def args(name: str) -> list[str]:
        return [f"model={model}", f"data={data}", "device=cpu", "epochs=2", "imgsz=64", "batch=4", "nbs=8",
                "workers=0", "mosaic=0", "close_mosaic=0", "warmup_epochs=1", "plots=false", f"project={project}",
                f"name={name}", "seed=3"]

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    port = free_port()
    nodes = [subprocess.Popen(torchrun(2, 1, port, args("two-nodes")), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    one_node = subprocess.run(torchrun(1, 2, free_port(), args("one-node")), env=env, capture_output=True, text=True,
                              timeout=300)
    assert one_node.returncode == 0, one_node.stdout[-2000:] + one_node.stderr[-2000:]

    assert sorted(p.name for p in project.iterdir()) == ["one-node", "two-nodes"]  # nothing numbered by rank 1
    assert sum("per process x 2" in o for o in outputs) == 1  # only global rank 0 logs (both have LOCAL_RANK 0)
    run = project / "two-nodes"
    with open(run / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 2  # one writer: one row per epoch
    two = torch.load(run / "weights" / "last.pt", weights_only=True)["model"]
    one = torch.load(project / "one-node" / "weights" / "last.pt", weights_only=True)["model"]
    assert two.keys() == one.keys()
    for key, tensor in one.items():
        assert torch.equal(tensor, two[key]), key
