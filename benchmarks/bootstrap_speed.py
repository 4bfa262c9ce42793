"""Speed of the image bootstrap (`yololab.ablation.bootstrap`) against re-running COCO evaluation per resample.

On a synthetic set of BCCD's size (72 images, 3 classes, 300 detections per image): the one-off COCO matching of a
run, then 1,000 resamples per metric through `MatchedStats.metrics`, and what a direct COCO evaluation
(`metrics.evaluate_coco`, faster-coco-eval) of resampled sets costs instead. Run it on an otherwise idle machine:

    .venv/bin/python benchmarks/bootstrap_speed.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic detection sets the bootstrap's tests use

from synthetic_detections import resampled_set, synthetic_detection_set  # noqa: E402
from yololab.ablation.bootstrap import METRIC_SLICES, MatchedStats, image_weights  # noqa: E402
from yololab.metrics import evaluate_coco  # noqa: E402
from yololab.utils.profile import machine_summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--direct", type=int, default=10, help="resampled sets scored by direct COCO evaluation")
    args = parser.parse_args()
    gt, predictions = synthetic_detection_set(seed=0, images=72, classes=3, detections=300)
    print(f"# machine: {machine_summary()}")
    print(f"# {len(gt['images'])} images, {len(gt['annotations'])} boxes, {len(predictions)} detections\n")
    t0 = time.perf_counter()
    matched = MatchedStats(gt, predictions)
    print(f"matching (once per run): {time.perf_counter() - t0:.2f} s")
    weights = image_weights(np.random.default_rng(0), matched.n_images, args.resamples)
    for name in METRIC_SLICES:
        t0 = time.perf_counter()
        matched.metrics(weights, (name,))
        print(f"{name:>4}: {time.perf_counter() - t0:.2f} s for {args.resamples} resamples")
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for _ in range(args.direct):
        evaluate_coco(*resampled_set(gt, predictions, sorted(rng.integers(0, len(gt["images"]), len(gt["images"])))))
    per = (time.perf_counter() - t0) / args.direct
    print(f"direct COCO evaluation: {per:.3f} s per resample, {per * args.resamples:.0f} s per {args.resamples}")


if __name__ == "__main__":
    main()
