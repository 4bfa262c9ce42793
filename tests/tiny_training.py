"""A tiny detector and dataset shared by the training, resume and DDP tests (fast on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from yololab.cfg import Settings, settings
from yololab.data import make_synthetic

TINY_MODEL = {
    "nc": 4,
    "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C2f", [32]],
                 [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "C2f", [64]], [-1, 1, "Conv", [64, 3, 2]],
                 [-1, 1, "C2f", [64]], [-1, 1, "Conv", [96, 3, 2]], [-1, 1, "SPPF", [96, 5]]],
    "head": [[[4, 6, 8], 1, "Detect", ["nc"]]],
}


def tiny_dataset(root: Path, n_train: int = 8, n_val: int = 4, overfit: bool = False,
                 small_share: float = 0.3) -> Path:
    """Synthetic 128 px shapes; with ``overfit`` the val split is the train split. Returns the data.yaml."""
    data_yaml = make_synthetic(root, n_train=n_train, n_val=n_val, imgsz=128, seed=0, objects=(2, 4),
                               small_share=small_share)
    if not overfit:
        return data_yaml
    cfg = yaml.safe_load(data_yaml.read_text())
    cfg["val"] = cfg["train"]
    out = root / "overfit.yaml"
    out.write_text(yaml.safe_dump(cfg))
    (root / "annotations" / "instances_val.json").unlink()  # ground truth comes from the (train) labels
    return out


def tiny_settings(data: Path, project: Path, **overrides) -> Settings:
    """`yololab train` settings for a seconds-long CPU run (no mosaic, small batch, single process loader)."""
    base = {"model": "", "data": str(data), "epochs": 2, "imgsz": 64, "batch": 4, "workers": 0, "device": "cpu",
            "project": str(project), "name": "run", "exist_ok": True, "plots": False, "mosaic": 0.0,
            "close_mosaic": 0, "warmup_epochs": 1, "nbs": 8, "verbose": False}
    return settings("train", {**base, **overrides})


def fixed_batch(n: int = 4, imgsz: int = 128, nc: int = 4, boxes_per_image: int = 3) -> tuple[torch.Tensor, dict]:
    """Random images and normalized-xywh targets, the same on every call (the dataset's batch contract)."""
    g = torch.Generator().manual_seed(0)
    m = n * boxes_per_image
    centre = 0.2 + 0.6 * torch.rand(m, 2, generator=g)
    size = 0.1 + 0.3 * torch.rand(m, 2, generator=g)
    batch = {"batch_idx": torch.arange(n).repeat_interleave(boxes_per_image).float(),
             "cls": torch.randint(0, nc, (m,), generator=g).float(), "bboxes": torch.cat((centre, size), 1)}
    return torch.rand(n, 3, imgsz, imgsz, generator=g), batch
