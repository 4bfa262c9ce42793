"""Train the anchor-based YOLOv5n from scratch with yololab and with the packaged YOLOv5 (7.0.14, the v7.0 code base).

The sibling of ``train_vs_peer.py`` (same records, scoring and table code): both sides get the same dataset, seed,
epochs, image size, batch size, device and loader workers, and each trains with its own default recipe: YOLOv5's
``hyp.scratch-low`` (its default) and yololab's family recipe for anchor-based models
(``cfg/recipes/yolov5-anchor.yaml``, the same values). The architecture is the same network: our ``yolov5n-anchor.yaml`` on our side, the package's own
``models/yolov5n.yaml`` on the peer's. Both are scored by yololab's COCO evaluator on the same ground truth (the peer's
val predictions of its best.pt, conf 0.001, iou 0.6, exported as COCO json; ours validates at the same NMS IoU 0.6,
the family recipe's).

Threads: both sides get the same number of torch threads, this process's default (what yololab's ``threads=auto``
gives its run), pinned in the peer with ``torch.set_num_threads``: the packaged YOLOv5 writes ``OMP_NUM_THREADS`` =
CPU count - 1 into the environment when imported (torch, imported first, keeps its own count; its loader workers
and any child process would read the smaller value).

The peer runs in its own venv (``bash benchmarks/peer/setup_yolov5.sh``), offline, in a subprocess.

    python benchmarks/train_vs_yolov5.py                              # bccd, 50 epochs, imgsz 320, batch 16, cpu
    python benchmarks/train_vs_yolov5.py --epochs 1 --fraction 0.1   # a quick end-to-end check
    python benchmarks/train_vs_yolov5.py --seeds 0,1,2               # seeds already run by a side are reused

Records: ``benchmarks/records/train_vs_yolov5/<setting>/seed<N>.json``; runs in ``benchmarks/.cache``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import torch

from _peer import YOLOV5_PYTHON, yolov5_env
from train_vs_peer import PeerSide, _run, main, score_peer

# Runs inside the peer's venv: trains with YOLOv5's defaults (hyp.scratch-low, SGD, AutoAnchor), times the training part
# of each epoch with its callbacks, validates best.pt with save_json and prints one JSON line.
YOLOV5_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path

    import numpy as np
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # removed in numpy 2, still called by YOLOv5 7.0's metrics
    import yaml
    import yolov5
    from yolov5 import train, val
    from yolov5.utils.callbacks import Callbacks

    cfg = json.loads(sys.argv[1])
    import torch
    torch.set_num_threads(cfg["threads"])  # the same count as ours, whatever the OMP_NUM_THREADS its import wrote
    starts, durations = [], []
    callbacks = Callbacks()
    callbacks.register_action("on_train_epoch_start", callback=lambda: starts.append(time.perf_counter()))
    callbacks.register_action("on_train_epoch_end",
                              callback=lambda epoch: durations.append(time.perf_counter() - starts[-1]))
    opt = train.parse_opt(True)
    settings = dict(data=cfg["data"], cfg=str(Path(yolov5.__file__).parent / "models" / f"{cfg['model']}.yaml"),
                    weights="", epochs=cfg["epochs"], imgsz=cfg["imgsz"], batch_size=cfg["batch"],
                    device=cfg["device"], seed=cfg["seed"], workers=cfg["workers"], project=cfg["project"],
                    name="train", exist_ok=True, noplots=True)
    for key, value in settings.items():
        setattr(opt, key, value)
    train.main(opt, callbacks)
    best = Path(cfg["project"]) / "train" / "weights" / "best.pt"
    metrics = val.run(data=cfg["data"], weights=str(best), imgsz=cfg["imgsz"], batch_size=cfg["batch"],
                      device=cfg["device"], save_json=True, plots=False, project=cfg["project"], name="val",
                      exist_ok=True, workers=cfg["workers"])[0]
    names = yaml.safe_load(Path(cfg["data"]).read_text())["names"]
    print(json.dumps({"map50": float(metrics[2]), "map": float(metrics[3]), "epoch_train_s": durations,
                      "predictions": str(Path(cfg["project"]) / "val" / "best_predictions.json"),
                      "names": names if isinstance(names, dict) else dict(enumerate(names))}))
""")
YOLOV5 = "yolov5 7.0.14"


def run_yolov5(args, data: Path, project: Path) -> dict:
    if not YOLOV5_PYTHON.is_file():
        raise SystemExit(f"{YOLOV5_PYTHON} not found: run `bash benchmarks/peer/setup_yolov5.sh` first")
    cfg = {"model": args.peer_model, "data": str(data), "epochs": args.epochs, "imgsz": args.imgsz,
           "batch": args.batch, "device": args.device, "seed": args.seed, "workers": args.workers,
           "project": str(project), "threads": torch.get_num_threads()}
    result = _run([str(YOLOV5_PYTHON), "-c", YOLOV5_SCRIPT, json.dumps(cfg)], project / "peer.log", env=yolov5_env())
    return score_peer(result, data, project, "YOLOv5 val predictions of best.pt (conf 0.001, iou 0.6) scored by "
                                             "yololab's evaluator")


def ours_settings() -> dict:
    """The family recipe keys yololab's settings know today, passed explicitly (equal to what the precedence rule
    gives an anchor-based model once the recipe is applied by default)."""
    from yololab.cfg import defaults
    from yololab.cfg.recipe import load_recipe

    return {k: v for k, v in load_recipe("yolov5-anchor").items() if k in defaults()}


if __name__ == "__main__":
    side = PeerSide(YOLOV5, run_yolov5, "yolov5n-anchor", "train_vs_yolov5", ours_settings(), peer_model="yolov5n")
    main(side, __doc__)
