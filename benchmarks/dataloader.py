"""Training-pipeline throughput: images/s through the DataLoader with mosaic at 640 (default hyp), ours and
the peer's (Ultralytics, when benchmarks/peer/setup.sh installed it) on the same data and settings.

Run: ``.venv/bin/python benchmarks/dataloader.py [--data ../shared/datasets/bccd/data.yaml] [--images 320]``.
The dataset is copied to a temporary folder first (the peer would write its label cache into the dataset);
each side then loads and caches its labels and runs one untimed warm-up batch (worker start-up).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _peer import PEER_PYTHON, ROOT, in_peer, peer_available, peer_env

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "bccd" / "data.yaml"


def measure(loader, n_images: int) -> dict[str, float]:
    """Images/s over ``n_images`` after one untimed warm-up batch; loops over epochs if needed."""
    seen, start, warm = 0, None, False
    while seen < n_images:
        for batch in loader:
            if not warm:
                warm, start = True, time.perf_counter()
                continue
            seen += len(batch["img"])
            if seen >= n_images:
                break
    seconds = time.perf_counter() - start
    return {"images": seen, "seconds": round(seconds, 3), "images_per_s": round(seen / seconds, 1)}


def run_ours(args) -> dict:
    from yololab.data import YoloDataset, build_dataloader, load_data_config

    cfg = load_data_config(args.data)
    dataset = YoloDataset(cfg.train, imgsz=args.imgsz, augment=True, nc=cfg.nc)  # default hyp: mosaic 1.0
    loader = build_dataloader(dataset, args.batch, workers=args.workers, shuffle=True, seed=0)
    return measure(loader, args.images)


def run_peer(args) -> dict:
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(args.data))
    cfg = get_cfg(overrides={"imgsz": args.imgsz, "batch": args.batch, "workers": args.workers, "mosaic": 1.0,
                             "data": str(args.data)})
    dataset = build_yolo_dataset(cfg, data["train"], args.batch, data, mode="train", stride=32)
    loader = build_dataloader(dataset, args.batch, args.workers, shuffle=True, rank=-1)
    return measure(loader, args.images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=320, help="images timed after the warm-up batch")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="(internal) where the peer run writes its JSON")
    parser.add_argument("--in-peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if in_peer():
        args.out.write_text(json.dumps(run_peer(args)))
        return 0
    if not args.data.is_file():
        print(f"dataset not found: {args.data}")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        args.data = copy_dataset(args.data, Path(tmp) / "data")
        results = run_both(args)
    for name, r in results.items():
        print(f"{name:<12} {r['images_per_s']:>8.1f} images/s  ({r['images']} images in {r['seconds']:.1f} s)")
    if "ultralytics" in results:
        ratio = results["yololab"]["images_per_s"] / results["ultralytics"]["images_per_s"]
        results["ratio_yololab_over_ultralytics"] = round(ratio, 3)
        print(f"ratio yololab / ultralytics: {ratio:.2f}")
    print(json.dumps(results))
    return 0


def copy_dataset(data_yaml: Path, dst: Path) -> Path:
    """Copy the dataset root of ``data_yaml`` to ``dst``; returns the copied yaml (with an absolute ``path``)."""
    from yololab.data import load_data_config

    root, yaml_file = load_data_config(data_yaml).root, data_yaml.resolve()
    if not yaml_file.is_relative_to(root):
        raise SystemExit(f"{data_yaml} must lie inside its dataset root {root} to be copied")
    shutil.copytree(root, dst)
    copied = dst / yaml_file.relative_to(root)
    spec = yaml.safe_load(copied.read_text())
    spec["path"] = str(dst)  # the peer resolves a relative `path` against the working directory
    copied.write_text(yaml.safe_dump(spec, sort_keys=False))
    return copied


def run_both(args) -> dict:
    from yololab.utils.profile import machine_summary

    print(f"{args.data} train split, mosaic at {args.imgsz}, batch {args.batch}, {args.workers} workers; "
          f"{machine_summary()}")
    results = {"yololab": run_ours(args)}
    if not peer_available():
        print("peer not installed (run benchmarks/peer/setup.sh)")
        return results
    out = args.data.parent.parent / "peer.json"
    forwarded = [f"--{k}={getattr(args, k)}" for k in ("data", "images", "imgsz", "batch", "workers")]
    code = subprocess.call([str(PEER_PYTHON), __file__, "--in-peer", f"--out={out}", *forwarded], env=peer_env())
    if code == 0:
        results["ultralytics"] = json.loads(out.read_text())
    else:
        print(f"peer run failed with exit code {code}")
    return results


if __name__ == "__main__":
    sys.exit(main())
