"""Recall of small objects, whole image against sliced prediction: the table of docs/predict-export.md.

Trains a tiny two-level detector (reg_max 4, strides 8/16) 30 epochs on 64 synthetic 128 px images of 8-28 px
objects (seed 0, one thread: the same weights at any core count), then predicts 1024 x 1024 scenes of 40 objects
of 12-24 px at ``imgsz=128``, ``conf=0.1``, on the whole image and in 128 px tiles (``slice=128 overlap=0.2``).
Recall is the share of objects matched at IoU >= 0.5. tests/test_predict.py trains the same detector.

    python benchmarks/sliced_recall.py                 # scene seeds 0, 1, 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from yololab import YOLO
from yololab.data import make_large_scene, make_synthetic
from yololab.engine.predictor import predict, sliced_predict
from yololab.ops import box_iou
from yololab.utils.profile import machine_summary

# Two detection levels (strides 8, 16) and reg_max 4: small enough to train in seconds on 2 CPU cores.
SMALL_OBJECT_MODEL = {
    "nc": 4, "reg_max": 4,
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "C2f", [16, True]],
                 [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C2f", [32, True]], [-1, 1, "Conv", [32, 3, 2]],
                 [-1, 1, "C2f", [32, True]]],
    "head": [[[4, 6], 1, "Detect", ["nc"]]],
}
SCENE = {"n_objects": 40, "object_px": (12, 24)}


def train_small_object_detector(root: Path) -> Path:
    """Train the tiny detector under ``root`` (its data in ``small-objects-data``); the path of its last.pt."""
    data = make_synthetic(root / "small-objects-data", n_train=64, n_val=8, imgsz=128, objects=(3, 8),
                          small_share=1.0)
    threads = torch.get_num_threads()
    try:
        YOLO(SMALL_OBJECT_MODEL).train(data=str(data), imgsz=128, epochs=30, batch=16, optimizer="AdamW", lr0=0.004,
                                       mosaic=0.0, close_mosaic=0, warmup_epochs=1, amp=False, workers=0,
                                       device="cpu", val=False, plots=False, project=str(root), name="small-objects",
                                       exist_ok=True, verbose=False, threads=1)
    finally:
        torch.set_num_threads(threads)
    return root / "small-objects" / "weights" / "last.pt"


def recall(gt: torch.Tensor, det: torch.Tensor, iou: float = 0.5) -> float:
    """Share of ground-truth boxes matched by some detection at ``iou``."""
    if not len(det):
        return 0.0
    return (box_iou(gt, det[:, :4]).max(1).values >= iou).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="scene seeds")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sliced_recall-") as folder:
        model = YOLO(train_small_object_detector(Path(folder))).model
    print(machine_summary())
    print("| scene seed | whole image at 128 | sliced, `slice=128 overlap=0.2` (+ whole image) |\n|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        img, _, boxes = make_large_scene(1024, 1024, seed=seed, **SCENE)
        gt = torch.from_numpy(boxes)
        whole = predict(model, img, imgsz=128, conf=0.1)[0].boxes.data
        sliced = sliced_predict(model, img, imgsz=128, slice=128, overlap=0.2, conf=0.1)
        print(f"| {seed} | {recall(gt, whole):.2f} ({len(whole)}) | {recall(gt, sliced):.2f} ({len(sliced)}) |")


if __name__ == "__main__":
    main()
