"""DDP on CPU: two gloo processes train one short epoch; rank 0 alone writes, and both end with equal weights."""

import csv
import os

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from tiny_training import TINY_MODEL, tiny_dataset, tiny_settings
from yololab.engine.trainer import Trainer
from yololab.utils.dist import free_port
from yololab.utils.torch_utils import unwrap

WORLD = 2


def train_rank(rank: int, port: int, data: str, project: str, model_yaml: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    trainer = Trainer(tiny_settings(data, project, model=model_yaml, epochs=1, batch=4, exist_ok=False))
    trainer.train()
    # Parameters must match exactly; BatchNorm running stats are per process (rank 0's are broadcast each forward).
    params = {k: v.detach() for k, v in unwrap(trainer.model).named_parameters()}
    torch.save({"params": params, "batch": trainer.batch, "batches": len(trainer.train_loader),
                "steps": trainer.ema.updates, "save_dir": str(trainer.save_dir)},
               os.path.join(project, f"rank{rank}.pt"))


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_process_cpu_ddp(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    model_yaml = tmp_path / "tiny.yaml"
    model_yaml.write_text(yaml.safe_dump(TINY_MODEL))
    project = tmp_path / "runs"
    (project / "run").mkdir(parents=True)  # taken: the run is numbered, by rank 0 for both
    mp.spawn(train_rank, args=(free_port(), str(data), str(project), str(model_yaml)), nprocs=WORLD, join=True)

    ranks = [torch.load(project / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["batch"] for r in ranks] == [2, 2]  # batch=4 is the total over both processes
    assert [r["batches"] for r in ranks] == [2, 2]  # each rank sees half of the 8 images
    assert ranks[0]["steps"] == ranks[1]["steps"] >= 1  # the optimizer stepped on both ranks
    for key, tensor in ranks[0]["params"].items():
        assert torch.equal(tensor, ranks[1]["params"][key]), key
    run_dir = project / "run2"
    assert [r["save_dir"] for r in ranks] == [str(run_dir)] * WORLD
    assert sorted(p.name for p in (run_dir / "weights").iterdir()) == ["best.pt", "last.pt"]
    with open(run_dir / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 1  # one writer: one row for the one epoch
    ckpt = torch.load(run_dir / "weights" / "last.pt", weights_only=True)
    assert not any(".module." in k for k in ckpt["model"])  # plain (unwrapped) state_dict keys
