"""Validation speed side by side: ``YOLO(model).val`` against the peer's ``val`` on BCCD val, same weights.

Both validate yolov8n (nc=3, random weights from seed 0: the peer's model loads our state_dict, strict, so both
do the same forward work and see the same detections) on a private copy of the BCCD val split (the peer writes
its label cache beside the labels), CPU, conf 0.001, iou 0.7, max_det 300, rect batches, no plots. Each side
first runs once at imgsz 64 (label caches, kernel warm-up); then wall time of ``--repeats`` runs at ``--imgsz``
is measured and the best kept. Each framework uses its own CPU defaults (ours: 2 loader workers; the peer
forces 0 on CPU) and fuses Conv+BN before validating.

Run: ``.venv/bin/python benchmarks/val_vs_peer.py [--imgsz 640] [--batch 16] [--repeats 2]``
(the peer comes from benchmarks/peer/setup.sh; without it only our numbers are printed).
"""

from __future__ import annotations

import argparse
import json
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


def run_ours(data: Path, weights: Path, args: argparse.Namespace) -> dict:
    import torch

    from yololab import YOLO
    from yololab.nn import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3)
    model.load_state_dict(torch.load(weights, weights_only=True))
    yolo = YOLO(model)
    common = dict(data=str(data), batch=args.batch, conf=0.001, iou=0.7, max_det=300, device="cpu", plots=False,
                  verbose=False)
    yolo.val(imgsz=64, **common)
    walls, result = [], {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = yolo.val(imgsz=args.imgsz, **common)
        walls.append(time.perf_counter() - t0)
    return {"wall_s": min(walls), "speed_ms": result["speed_ms"], "map50_95": result["map"], "map50": result["map50"]}


def run_peer(data: Path, weights: Path, args: argparse.Namespace) -> dict:
    import torch
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    model.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    common = dict(data=str(data), batch=args.batch, conf=0.001, iou=0.7, max_det=300, device="cpu", plots=False,
                  save_json=False, verbose=False, project=str(data.parent / "peer-runs"), name="val", exist_ok=True)

    def val(imgsz: int):
        validator = DetectionValidator(args={**common, "imgsz": imgsz})
        stats = validator(model=model.eval())
        return validator, stats

    val(64)
    walls, validator, stats = [], None, {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        validator, stats = val(args.imgsz)
        walls.append(time.perf_counter() - t0)
    speed = {k: validator.speed.get(k, 0.0) for k in ("preprocess", "inference", "postprocess")}
    return {"wall_s": min(walls), "speed_ms": speed, "map50_95": stats.get("metrics/mAP50-95(B)"),
            "map50": stats.get("metrics/mAP50(B)")}


def table(ours: dict, peer: dict | None, args: argparse.Namespace) -> str:
    rows = [("yololab", ours)] + ([("peer (Ultralytics)", peer)] if peer else [])
    lines = [f"BCCD val (72 images), yolov8n nc=3 same random weights, imgsz {args.imgsz}, batch {args.batch}, CPU, "
             f"best of {args.repeats}",
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
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--in-peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if in_peer():  # child process in the peer's venv: measure the peer, write its numbers for the parent
        result = run_peer(args.work / "data.yaml", args.work / "weights.pt", args)
        (args.work / "peer.json").write_text(json.dumps(result))
        return 0
    if not BCCD.is_dir():
        print(f"dataset not found: {BCCD}")
        return 1
    import torch

    from yololab.nn import DetectionModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="val-vs-peer-") as tmp:
        work = Path(tmp)
        data = copy_val_split(work)
        torch.save(DetectionModel("yolov8n.yaml", nc=3).state_dict(), work / "weights.pt")
        ours = run_ours(data, work / "weights.pt", args)
        peer = None
        if not peer_available():
            print("peer not installed (benchmarks/peer/setup.sh): recording ours only")
        elif rerun_in_peer(__file__, "--work", str(work), "--imgsz", str(args.imgsz), "--batch", str(args.batch),
                           "--repeats", str(args.repeats)) == 0:
            peer = json.loads((work / "peer.json").read_text())
        else:
            print("the peer's run failed (see above): recording ours only")
    print(table(ours, peer, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
