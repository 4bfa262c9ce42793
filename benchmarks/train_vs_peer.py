"""Train the same detector from scratch with yololab and with the peer (Ultralytics 8.4.190) and compare.

Both frameworks get the same dataset, model YAML, seed, epochs, image size, batch size, device and loader workers;
everything else is each one's default recipe. Accuracy of both is scored by yololab's COCO evaluator on the same
ground truth (the peer's own val predictions are exported as COCO json), so mAP50, mAP50-95 and APs are comparable.
Training throughput is train images per second of the training part of an epoch (loading, forward, backward,
optimizer step; validation excluded), median over epochs.

The peer runs in its own venv (``bash benchmarks/peer/setup.sh``), fully offline, in a subprocess.

    python benchmarks/train_vs_peer.py                                # bccd, 50 epochs, imgsz 320, batch 16, cpu
    python benchmarks/train_vs_peer.py --epochs 3 --fraction 0.25     # a quick end-to-end check
    python benchmarks/train_vs_peer.py --seeds 0,1,2                  # seeds already run by a side are reused
    python benchmarks/train_vs_peer.py --only ours-bf16 --epochs 1 --fraction 0.1   # one side (ours, ours-bf16, peer)

Our sides: ``yololab`` (float32 on CPU: amp=false, so the records keep their meaning whatever amp=auto becomes) and
``yololab bf16`` (amp=bf16: bfloat16 autocast, run by default only where the CPU has native bf16 or on CUDA).

Each finished side of a seed is recorded in ``benchmarks/records/train_vs_peer/<setting>/seed<N>.json`` (kept in
git, so a fresh checkout reuses it); the training runs themselves stay in ``benchmarks/.cache``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from _peer import PEER_PYTHON, peer_available, peer_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "bccd" / "data.yaml"

# Runs inside the peer's venv. Times the training part of each epoch with the peer's own callbacks, validates the
# best weights with save_json, and prints one JSON line.
PEER_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from ultralytics import YOLO

    cfg = json.loads(sys.argv[1])
    model = YOLO(cfg["model"])
    starts, durations = [], []
    model.add_callback("on_train_epoch_start", lambda trainer: starts.append(time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda trainer: durations.append(time.perf_counter() - starts[-1]))
    model.train(data=cfg["data"], epochs=cfg["epochs"], imgsz=cfg["imgsz"], batch=cfg["batch"], device=cfg["device"],
                seed=cfg["seed"], workers=cfg["workers"], project=cfg["project"], name="train", exist_ok=True,
                pretrained=False, plots=False, verbose=False)
    best = Path(cfg["project"]) / "train" / "weights" / "best.pt"
    val = YOLO(str(best)).val(data=cfg["data"], imgsz=cfg["imgsz"], batch=cfg["batch"], device=cfg["device"],
                              save_json=True, plots=False, project=cfg["project"], name="val", exist_ok=True,
                              workers=cfg["workers"])
    names = YOLO(str(best)).names
    print(json.dumps({"map50": float(val.box.map50), "map": float(val.box.map), "epoch_train_s": durations,
                      "predictions": str(Path(val.save_dir) / "predictions.json"), "names": names}))
""")


def subset_data(data_yaml: Path, fraction: float, out: Path) -> Path:
    """A data.yaml whose train split is the first ``fraction`` of the train images (sorted; val unchanged)."""
    from yololab.data import load_data_config

    cfg = load_data_config(data_yaml)
    train = sorted(cfg.train)[: max(1, round(len(cfg.train) * fraction))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text("".join(f"{p.resolve()}\n" for p in train))
    (out / "val.txt").write_text("".join(f"{p.resolve()}\n" for p in sorted(cfg.val)))
    names = {int(k): v for k, v in cfg.names.items()}
    subset = out / "data.yaml"
    subset.write_text(yaml.safe_dump({"path": str(out), "train": "train.txt", "val": "val.txt", "names": names}))
    return subset


def run_ours(args, data: Path, project: Path, amp: str | None = None) -> dict:
    amp = amp or ("false" if args.device == "cpu" else "auto")
    cmd = [sys.executable, "-m", "yololab", "train", f"model={args.model}.yaml", f"data={data}",
           f"epochs={args.epochs}", f"imgsz={args.imgsz}", f"batch={args.batch}", f"device={args.device}",
           f"seed={args.seed}", f"workers={args.workers}", f"project={project}", "name=train", "exist_ok=true",
           "plots=false", "json=true", f"amp={amp}", *(f"{k}={v}" for k, v in args.ours_settings.items())]
    result = _run(cmd, project / "ours.log", env=os.environ.copy())
    return {"map50": result["map50"], "map": result["map"], "aps": result["aps"],
            "images_per_s": result["train_images_per_s"], "source": "yololab train (final validation of best.pt)"}


def run_ours_bf16(args, data: Path, project: Path) -> dict:
    return run_ours(args, data, project, amp="bf16")


def run_peer(args, data: Path, project: Path) -> dict:
    if not peer_available():
        raise SystemExit(f"{PEER_PYTHON} not found: run `bash benchmarks/peer/setup.sh` first")
    cfg = {"model": f"{args.model}.yaml", "data": str(data), "epochs": args.epochs, "imgsz": args.imgsz,
           "batch": args.batch, "device": args.device, "seed": args.seed, "workers": args.workers,
           "project": str(project)}
    result = _run([str(PEER_PYTHON), "-c", PEER_SCRIPT, json.dumps(cfg)], project / "peer.log", env=peer_env())
    return score_peer(result, data, project, "peer val predictions (conf 0.001, iou 0.7) scored by yololab's evaluator")


def score_peer(result: dict, data: Path, project: Path, source: str) -> dict:
    """A peer script's JSON line (its val predictions, names and epoch times) scored by yololab's evaluator."""
    from yololab.data import load_data_config
    from yololab.engine.validator import evaluate_files

    gt = coco_ground_truth(load_data_config(data), project)
    predictions = peer_predictions_to_gt_ids(Path(result["predictions"]), gt, result["names"])
    ours_eval = evaluate_files(gt, predictions, verbose=False)
    n_images = len(load_data_config(data).train)
    durations = sorted(result["epoch_train_s"])
    return {"map50": ours_eval["map50"], "map": ours_eval["map"], "aps": ours_eval["aps"],
            "images_per_s": n_images / durations[len(durations) // 2] if durations else None,
            "peer_reported": {"map50": result["map50"], "map": result["map"]}, "source": source}


def coco_ground_truth(cfg, project: Path) -> Path:
    """The val split's COCO ground truth: the dataset's own json when it has one, else built from the labels."""
    if cfg.coco_val_json is not None:
        return cfg.coco_val_json
    from yololab.data import load_labels
    from yololab.metrics import yolo_ground_truth

    labels, _ = load_labels(cfg.val, cfg.nc)
    path = project / "val_gt.json"
    path.write_text(json.dumps(yolo_ground_truth(labels, cfg.names)))
    return path


def peer_predictions_to_gt_ids(predictions: Path, gt_file: Path, peer_names: dict) -> Path:
    """Re-key the peer's COCO predictions (image id = file stem, category = class index, 0- or 1-based) to the
    ground truth's image and category ids (matched by file name and class name)."""
    gt = json.loads(Path(gt_file).read_text())
    image_ids = {Path(im["file_name"]).stem: im["id"] for im in gt["images"]}
    category_ids = {c["name"]: c["id"] for c in gt["categories"]}
    records = json.loads(predictions.read_text())
    offset = min((r["category_id"] for r in records), default=0)  # the peer numbers classes from 0 or from 1
    names = {int(k): v for k, v in peer_names.items()}
    out = [{**r, "image_id": image_ids[str(r["image_id"])], "category_id": category_ids[names[r["category_id"] - offset]]}
           for r in records]
    path = predictions.with_name("predictions_gt_ids.json")
    path.write_text(json.dumps(out))
    return path


def _run(cmd: list[str], log: Path, env: dict) -> dict:
    """Run a training subprocess (stderr to ``log``, stdout appended after it); return its last JSON line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"running {Path(cmd[0]).parent.parent.name} {' '.join(cmd[1:4]) if cmd[1] != '-c' else '(peer script)'} "
          f"... log: {log}", flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env, cwd=ROOT)
    with open(log, "a") as f:
        f.write(proc.stdout)
    if proc.returncode:
        tail = "\n".join(log.read_text().strip().splitlines()[-8:])
        raise SystemExit(f"{cmd[0]} failed with exit code {proc.returncode}:\n{tail}")
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])


OURS, OURS_BF16, PEER = "yololab", "yololab bf16", "ultralytics 8.4.190"
SIDES = ("ours", "ours-bf16", "peer")  # --only's names


@dataclass
class PeerSide:
    """The framework compared against: its row name, how one seed is run, defaults and where records go."""

    name: str
    run: Callable[..., dict]
    model: str
    records: str
    ours_settings: dict[str, object] = field(default_factory=dict)  # extra yololab train settings (key -> value)
    peer_model: str | None = None  # the peer's own model name when it differs from ours
    default_sides: tuple[str, ...] = ("ours", "peer")  # the sides run without --only


ULTRALYTICS = PeerSide(PEER, run_peer, "yolov8n", "train_vs_peer", default_sides=SIDES)


def table(by_seed: dict[int, dict[str, dict]], args) -> str:
    """Per-seed rows; with two or more seeds run by both, the means and the paired difference with a 95% t CI."""
    from yololab.stats import paired_difference, summarize

    head = (f"{args.model} from scratch on {args.data_name}: epochs={args.epochs} imgsz={args.imgsz} "
            f"batch={args.batch} device={args.device} workers={args.workers} fraction={args.fraction}\n\n")
    lines = ["| seed | framework | mAP50 | mAP50-95 | APs | train images/s |", "|---|---|---|---|---|---|"]
    peer = args.peer_name
    for seed, rows in sorted(by_seed.items()):
        for name, r in rows.items():
            aps = "-" if r["aps"] is None else f"{r['aps']:.3f}"
            lines.append(f"| {seed} | {name} | {r['map50']:.3f} | {r['map']:.3f} | {aps} | {r['images_per_s']:.2f} |")
    with_peer: dict[int, dict] = {}  # seeds where one of our sides and the peer both ran
    for ours, theirs, theirs_label in ((OURS, peer, "peer"), (OURS_BF16, peer, "peer"), (OURS_BF16, OURS, OURS)):
        both = {seed: rows for seed, rows in sorted(by_seed.items()) if ours in rows and theirs in rows}
        if not both:
            continue
        if theirs == peer:
            with_peer.update(both)
        lines.append("")
        for metric, label in (("map", "mAP50-95"), ("map50", "mAP50"), ("aps", "APs")):
            a = {s: r[ours][metric] for s, r in both.items() if r[ours][metric] is not None}
            b = {s: r[theirs][metric] for s, r in both.items() if r[theirs][metric] is not None}
            sa, sb = summarize(list(a.values())), summarize(list(b.values()))
            diff = paired_difference(a, b)
            interval = f" [{diff.low:+.3f}, {diff.high:+.3f}] {diff.verdict}" if diff.n > 1 else ""
            lines.append(f"{label}: {ours} {sa.mean:.3f}±{sa.std:.3f}, {theirs_label} {sb.mean:.3f}±{sb.std:.3f} "
                         f"over {diff.n} seed(s); {ours} - {theirs_label} {diff.mean:+.3f}{interval}")
        lines.append(f"throughput {ours} / {theirs_label}: " + ", ".join(
            f"seed {s} x{r[ours]['images_per_s'] / r[theirs]['images_per_s']:.2f}" for s, r in both.items()))
    if with_peer:
        lines.append("peer's own reported numbers: " + ", ".join(
            f"seed {s}: mAP50 {r[peer]['peer_reported']['map50']:.3f}, mAP50-95 {r[peer]['peer_reported']['map']:.3f}"
            for s, r in sorted(with_peer.items())))
    return head + "\n".join(lines)


def sides_to_run(only: str | None, device: str, default: tuple[str, ...]) -> list[str]:
    """The sides ``--only`` names (comma-separated), or the ``default`` ones, ours-bf16 only where bf16 is native."""
    from yololab.utils.profile import native_bf16_flags

    if only:
        chosen = [s.strip() for s in only.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in SIDES]
        if unknown:
            raise SystemExit(f"--only: unknown side(s) {', '.join(unknown)}; choose from {', '.join(SIDES)}")
        return chosen
    if "ours-bf16" in default and device == "cpu" and not native_bf16_flags():
        print("ours-bf16 skipped: this CPU has no native bfloat16 (avx512_bf16 or amx_bf16)")
        return [s for s in default if s != "ours-bf16"]
    return list(default)


def main(side: PeerSide = ULTRALYTICS, description: str = __doc__) -> None:
    from yololab.utils.profile import machine_summary

    p = argparse.ArgumentParser(description=description.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", default=side.model)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each seed's finished side is reused")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--fraction", type=float, default=1.0, help="share of the train images used (val stays whole)")
    p.add_argument("--only", help=f"comma-separated sides to run: {', '.join(SIDES)} (default: "
                                  f"{','.join(side.default_sides)})")
    p.add_argument("--out", type=Path, default=HERE / ".cache" / side.records, help="training runs")
    p.add_argument("--records", type=Path, default=HERE / "records" / side.records, help="per-seed results")
    args = p.parse_args()
    args.peer_name, args.ours_settings, args.peer_model = side.name, side.ours_settings, side.peer_model or args.model
    if not args.data.is_file():
        raise SystemExit(f"{args.data} not found (../shared/datasets/bccd is expected beside the checkout)")
    args.data_name = args.data.parent.name
    setting = f"{args.data_name}-{args.model}-e{args.epochs}-s{args.imgsz}-f{args.fraction}"
    out, records = args.out / setting, args.records / setting
    data = subset_data(args.data, args.fraction, out / "data")  # absolute paths: the peer resolves relative ones from cwd
    sides = sides_to_run(args.only, args.device, side.default_sides)
    for seed in [int(s) for s in args.seeds.split(",")]:
        args.seed, seed_dir = seed, out / f"seed{seed}"
        result_file = records / f"seed{seed}.json"
        rows = json.loads(result_file.read_text()) if result_file.is_file() else {}
        for name, which, run in ((OURS, "ours", run_ours), (OURS_BF16, "ours-bf16", run_ours_bf16),
                                 (side.name, "peer", side.run)):
            if which in sides and name not in rows:
                rows[name] = {**run(args, data, seed_dir / which), "machine": machine_summary()}
                records.mkdir(parents=True, exist_ok=True)
                result_file.write_text(json.dumps(rows, indent=1))  # after each side: a crash keeps the other
    by_seed = {int(f.stem[4:]): json.loads(f.read_text()) for f in records.glob("seed*.json")}
    print(table(by_seed, args))


if __name__ == "__main__":
    main()
