"""Validation speed side by side: ``YOLO(model).val`` against the peer's ``val`` on BCCD val, same weights.

Both validate yolov8n (nc=3, random weights from seed 0: the peer's model loads our state_dict, strict, so both
do the same forward work and see the same detections) on a private copy of the BCCD val split (the peer writes
its label cache beside the labels), CPU, conf 0.001, iou 0.7, max_det 300, rect batches, no plots, Conv+BN
fused. Both get the same CPU resources: ``--threads`` torch threads (default: what the peer picks for itself,
``min(8, cpus - 1)``) and images decoded in the main process (the peer forces 0 loader workers on CPU; ours is
given ``workers=0`` too). Each side first runs once at imgsz 64 (label caches, kernel warm-up); then ``--repeats``
alternating rounds (ours, peer, ours, peer...) of one validation at ``--imgsz`` are timed and each side's best
wall time is kept.

Run: ``.venv/bin/python benchmarks/val_vs_peer.py [--imgsz 640] [--batch 16] [--repeats 3] [--threads N]``
(the peer comes from benchmarks/peer/setup.sh; without it only our numbers are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _peer import in_peer, peer_available, rerun_in_peer

ROOT = Path(__file__).resolve().parents[1]
BCCD = ROOT.parent / "shared" / "datasets" / "bccd"


def copy_val_split(dest: Path) -> Path:
    """BCCD val images, labels and COCO json in ``dest`` with a data.yaml whose train and val are that split."""
    for sub in ("images/val", "labels/val"):
        shutil.copytree(BCCD / sub, dest / sub)
    shutil.copytree(BCCD / "annotations", dest / "annotations")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(("RBC", "WBC", "Platelets")))
    (dest / "data.yaml").write_text(f"path: {dest}\ntrain: images/val\nval: images/val\nnames:\n{names}\n")
    return dest / "data.yaml"


def ours_validator(data: Path, weights: Path, args: argparse.Namespace):
    """A function running one validation of our model at ``imgsz`` (warmed up once at imgsz 64)."""
    import torch

    from yololab import YOLO
    from yololab.nn import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3)
    model.load_state_dict(torch.load(weights, weights_only=True))
    yolo = YOLO(model)
    common = dict(data=str(data), batch=args.batch, conf=0.001, iou=0.7, max_det=300, device="cpu", plots=False,
                  workers=0, verbose=False)
    yolo.val(imgsz=64, **common)

    def run() -> dict:
        t0 = time.perf_counter()
        result = yolo.val(imgsz=args.imgsz, **common)
        return {"wall_s": time.perf_counter() - t0, "speed_ms": result["speed_ms"], "map50_95": result["map"],
                "map50": result["map50"]}

    return run


def peer_round(data: Path, weights: Path, args: argparse.Namespace) -> dict:
    """In the peer's venv: warm up at imgsz 64, then one timed validation at ``imgsz``."""
    import torch
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.nn.tasks import DetectionModel

    torch.set_num_threads(args.threads)  # the peer sets its own count at import; use the same as ours
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    model.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    common = dict(data=str(data), batch=args.batch, conf=0.001, iou=0.7, max_det=300, device="cpu", plots=False,
                  save_json=False, verbose=False, project=str(data.parent / "peer-runs"), name="val", exist_ok=True)

    def val(imgsz: int):
        validator = DetectionValidator(args={**common, "imgsz": imgsz})
        return validator, validator(model=model.eval())

    val(64)
    t0 = time.perf_counter()
    validator, stats = val(args.imgsz)
    return {"wall_s": time.perf_counter() - t0,
            "speed_ms": {k: validator.speed.get(k, 0.0) for k in ("preprocess", "inference", "postprocess")},
            "map50_95": stats.get("metrics/mAP50-95(B)"), "map50": stats.get("metrics/mAP50(B)")}


def table(ours: dict, peer: dict | None, args: argparse.Namespace) -> str:
    rows = [("yololab", ours)] + ([("peer (Ultralytics)", peer)] if peer else [])
    lines = [f"BCCD val (72 images), yolov8n nc=3 same random weights, imgsz {args.imgsz}, batch {args.batch}, CPU "
             f"({args.threads} torch threads, no loader workers), best of {args.repeats}",
             "",
             "| framework | wall s | preprocess ms/img | inference ms/img | postprocess ms/img | mAP50-95 | mAP50 |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        s = r["speed_ms"]
        lines.append(f"| {name} | {r['wall_s']:.1f} | {s['preprocess']:.1f} | {s['inference']:.1f} | "
                     f"{s['postprocess']:.1f} | {r['map50_95']:.4f} | {r['map50']:.4f} |")
    if peer:
        lines.append(f"\nwall-time ratio yololab / peer: {ours['wall_s'] / peer['wall_s']:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(8, max(1, (os.cpu_count() or 1) - 1)))
    parser.add_argument("--in-peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if in_peer():  # child process in the peer's venv: one round, numbers written for the parent
        (args.work / "peer.json").write_text(json.dumps(peer_round(args.work / "data.yaml", args.work / "weights.pt",
                                                                   args)))
        return 0
    if not BCCD.is_dir():
        print(f"dataset not found: {BCCD}")
        return 1
    import torch

    from yololab.nn import DetectionModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peer_args = ("--imgsz", str(args.imgsz), "--batch", str(args.batch), "--threads", str(args.threads))
    ours_runs, peer_runs = [], []
    with tempfile.TemporaryDirectory(prefix="val-vs-peer-") as tmp:
        work = Path(tmp)
        data = copy_val_split(work)
        torch.save(DetectionModel("yolov8n.yaml", nc=3).state_dict(), work / "weights.pt")
        run_ours = ours_validator(data, work / "weights.pt", args)
        if not peer_available():
            print("peer not installed (benchmarks/peer/setup.sh): recording ours only")
        for _ in range(args.repeats):  # alternate rounds so a change in machine load hits both sides
            ours_runs.append(run_ours())
            if peer_available():
                if rerun_in_peer(__file__, "--work", str(work), *peer_args) != 0:
                    raise SystemExit("the peer's run failed (see above)")
                peer_runs.append(json.loads((work / "peer.json").read_text()))
    ours = min(ours_runs, key=lambda r: r["wall_s"])
    peer = min(peer_runs, key=lambda r: r["wall_s"]) if peer_runs else None
    print(table(ours, peer, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
