"""The GPU check (issue 27): CUDA tests, training and latency against the peer, as one JSON file and one table.

Run it through ``benchmarks/gpu_check.sh`` (which sets up the packages the device image lacks). Three phases, each
written to ``gpu_check.json`` and ``gpu_check.md`` under ``--out`` (default ``$OUT``) as soon as it ends, so a run
stopped by its time limit still returns what it finished:

1. ``tests/test_cuda.py`` in a pytest subprocess (AMP, channels-last, EMA, NMS, assigner, validation, ONNX on
   CUDA, torchrun with NCCL).
2. yolov8n from scratch on BCCD with yololab (``python -m yololab train``) and with the peer (Ultralytics 8.4.190,
   its own venv), same data, epochs, image size, batch, seed, device and loader workers; both scored by yololab's
   evaluator (``benchmarks/train_vs_peer.py`` runs both sides). Train images/s is over the training part of an
   epoch (median epoch); GPU utilisation and memory are sampled with NVML while each side's process runs.
3. Latency of the fused yolov8n (same random weights on both sides) at batch 1 and 32: PyTorch fp32 and fp16, and
   ONNX Runtime with the CUDA provider when this onnxruntime has it; all timers alternate round by round
   (``benchmarks/latency_vs_peer.py``).

``--dry-run`` runs the same phases on CPU with tiny sizes (a synthetic set of 8 train images, 64 px, one epoch,
batch 2).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from _peer import PEER_PYTHON, peer_available
from latency_vs_peer import PeerWorker, onnx_timer, run_rounds
from train_vs_peer import OURS, PEER, run_ours, run_peer, subset_data

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA_CANDIDATES = (HERE / ".gpu-carry" / "bccd" / "data.yaml",  # the copy gpu_prepare.sh makes for the device
                   ROOT.parent / "shared" / "datasets" / "bccd" / "data.yaml")

# full run: sized so that the whole check stays within about 5 minutes on one H100
FULL = {"imgsz": 640, "batch": 32, "epochs": 15, "workers": 8, "latency_batches": (1, 32), "warmup": 10, "rounds": 20,
        "runs": 5}
DRY_RUN = {"imgsz": 64, "batch": 2, "epochs": 1, "workers": 0, "latency_batches": (1, 2), "warmup": 1, "rounds": 2,
           "runs": 1}


class GpuMonitor:
    """Samples GPU utilisation and memory with NVML in a thread while a ``with`` block runs."""

    def __init__(self, device: torch.device, interval_s: float = 0.2):
        self.device, self.interval_s = device, interval_s
        self.samples: list[tuple[float, float]] = []  # (utilisation %, memory used MiB)
        self.problem: str | None = None if device.type == "cuda" else "no CUDA device"
        self._stop = threading.Event()

    def __enter__(self) -> GpuMonitor:
        if self.problem is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)
                self._nvml = pynvml
                self.baseline_mib = self._read()[1]
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()
            except Exception as e:  # no NVML library or no permission: the numbers are reported missing
                self.problem = f"NVML unavailable: {e}"
        return self

    def _read(self) -> tuple[float, float]:
        util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
        return float(util), self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self._read())

    def __exit__(self, *exc) -> None:
        if self.problem is None:
            self._stop.set()
            self._thread.join()

    def summary(self) -> dict:
        """Mean and median utilisation while the process held GPU memory, and its peak memory over the baseline."""
        if self.problem is not None:
            return {"gpu_monitor": self.problem}
        busy = [u for u, mem in self.samples if mem > self.baseline_mib + 256]  # the CUDA context is up
        peak = max((mem for _, mem in self.samples), default=self.baseline_mib) - self.baseline_mib
        return {"gpu_util_mean": float(np.mean(busy)) if busy else None,
                "gpu_util_median": float(np.median(busy)) if busy else None,
                "gpu_mem_peak_mib": round(peak), "gpu_samples": len(self.samples)}


def environment(device: torch.device) -> dict:
    import onnxruntime as ort

    from yololab.utils.profile import machine_summary

    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"machine": machine_summary(load=False), "python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "onnxruntime": ort.__version__, "onnxruntime_providers": ort.get_available_providers(),
            "peer": str(PEER_PYTHON) if peer_available() else None,
            "commit": git.stdout.strip() if git.returncode == 0 else None}


def run_cuda_tests(out: Path) -> dict:
    """tests/test_cuda.py in a pytest subprocess; counts from its summary line, the whole output in a log."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    (out / "cuda_tests.log").write_text(proc.stdout + proc.stderr)
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1] if lines else proc.stderr.strip()[-300:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    skips = [ln.split(" ", 2)[-1] for ln in lines if ln.startswith("SKIPPED")]
    return {"returncode": proc.returncode, "summary": summary, **counts, "skip_reasons": skips}


def training_data(args: argparse.Namespace, work: Path) -> Path:
    """``--data``, else BCCD (the carried copy, else ../shared); a dry run trains on a tiny synthetic set."""
    if args.data is not None:
        return args.data
    if args.dry_run:
        from yololab.data import make_synthetic

        return make_synthetic(work / "synthetic", n_train=8, n_val=4, imgsz=128)
    data = next((p for p in DATA_CANDIDATES if p.is_file()), None)
    if data is None:
        raise SystemExit("BCCD not found: run benchmarks/gpu_prepare.sh (copies it into benchmarks/.gpu-carry) "
                         "or pass --data")
    return data


def train_both(args: argparse.Namespace, device: torch.device, out: Path, work: Path) -> dict:
    """yolov8n from scratch with yololab and with the peer, same settings; per side its numbers or its error."""
    from yololab.data import load_data_config

    source = training_data(args, work)
    data = subset_data(source, 1.0, work / "data")  # absolute paths: the peer resolves relative ones from its cwd
    n_train = len(load_data_config(data).train)
    settings = argparse.Namespace(model="yolov8n", epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                                  device=args.device, seed=0, workers=args.workers, ours_settings={})
    result = {"data": str(source), "train_images": n_train, **vars(settings), "sides": {}}
    sides = [(OURS, "ours", run_ours), (PEER, "peer", run_peer)]
    for name, side, run in sides:
        if side == "peer" and not peer_available():
            result["sides"][name] = {"skipped": f"{PEER_PYTHON} not found (benchmarks/gpu_prepare.sh carries the "
                                                "peer's wheels; benchmarks/peer/setup.sh installs it here)"}
            continue
        project = work / "train" / side
        start = time.perf_counter()
        try:
            with GpuMonitor(device) as monitor:
                row = run(settings, data, project)
        except SystemExit as e:  # the side's training failed: keep its message, go on with the other side
            row = {"error": str(e)}
        row["wall_s"] = round(time.perf_counter() - start, 1)
        row.update(monitor.summary())
        if row.get("images_per_s"):
            row["epoch_train_s"] = n_train / row["images_per_s"]
        log = project / f"{side}.log"
        if log.is_file():
            shutil.copy(log, out / f"train_{side}.log")
        result["sides"][name] = row
    ours, peer = (result["sides"][k].get("images_per_s") for k in (OURS, PEER))
    result["throughput_ours_over_peer"] = ours / peer if ours and peer else None
    return result


def latency_both(args: argparse.Namespace, device: torch.device, out: Path, work: Path) -> dict:
    """Fused yolov8n latency per batch size and precision (and ONNX Runtime when it can use ``device``)."""
    import onnxruntime as ort

    from yololab.engine.exporter import export_onnx
    from yololab.nn import DetectionModel
    from yololab.utils.profile import time_calls

    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml").eval()
    precisions = {"fp32": copy.deepcopy(model).fuse().to(device)}
    if device.type == "cuda":  # float16 inference is a GPU matter
        precisions["fp16"] = copy.deepcopy(model).fuse().to(device).half()
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    ort_ok = provider in ort.get_available_providers()
    result = {"imgsz": args.imgsz, "batches": list(args.latency_batches), "warmup": args.warmup,
              "rounds": args.rounds, "runs": args.runs, "onnxruntime_provider": provider if ort_ok else None,
              "onnx_skipped": None if ort_ok else f"this onnxruntime has no {provider}"}
    timers = {}
    for batch in args.latency_batches:
        for precision, net in precisions.items():
            x = torch.zeros(batch, 3, args.imgsz, args.imgsz, device=device, dtype=next(net.parameters()).dtype)
            timers[f"ours torch-{precision} b{batch}"] = (
                lambda w, r, net=net, x=x: time_calls(lambda: net(x), warmup=w, runs=r, sync=sync))
        if ort_ok:
            file = export_onnx(model, work / f"ours-b{batch}.onnx", args.imgsz, batch=batch)
            timers[f"ours onnx b{batch}"] = onnx_timer(file, str(device))
    peer = None
    if peer_available():
        torch.save(model.state_dict(), work / "state.pt")
        check = torch.rand(1, 3, args.imgsz, args.imgsz)
        np.save(work / "check_in.npy", check.numpy())
        peer = PeerWorker(work / "state.pt", work / "check_in.npy", args.imgsz, torch.get_num_threads(), work,
                          device=str(device), onnx_batches=tuple(args.latency_batches) if ort_ok else ())
        with torch.inference_mode():
            ref = model(check).numpy()
        result["peer_output_max_rel_diff"] = float(np.abs(peer.output - ref).max() / np.abs(ref).max())
        for batch in args.latency_batches:
            for precision in precisions:
                timers[f"peer torch-{precision} b{batch}"] = (
                    lambda w, r, b=batch, h=precision == "fp16": peer.time(w, r, work, batch=b, half=h))
            if ort_ok:
                timers[f"peer onnx b{batch}"] = onnx_timer(work / peer.info["onnx"][str(batch)], str(device))
    else:
        result["peer_skipped"] = f"{PEER_PYTHON} not found"
    try:
        with torch.inference_mode():
            result["timings"] = run_rounds(timers, args)
    finally:
        if peer is not None:
            peer.close()
            shutil.copy(work / "peer.log", out / "latency_peer.log")
    return result


def markdown(report: dict) -> str:
    """The report as markdown: environment, CUDA tests, training side by side, latency side by side."""
    env = report["environment"]
    lines = [f"# GPU check{' (dry run, CPU, tiny sizes)' if report['dry_run'] else ''}", "",
             f"{env['device']}; torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}, onnxruntime "
             f"{env['onnxruntime']} ({', '.join(env['onnxruntime_providers'])}); peer: "
             f"{'ultralytics 8.4.190' if env['peer'] else 'not installed'}; commit {env['commit']}; "
             f"{env['machine']}", ""]
    if "tests" in report:
        t = report["tests"]
        lines += [f"CUDA tests (`tests/test_cuda.py`): {t['summary']}", ""]
    if "train" in report:
        tr = report["train"]
        lines += [f"Training yolov8n from scratch on {tr['data']} ({tr['train_images']} train images): "
                  f"{tr['epochs']} epochs, imgsz {tr['imgsz']}, batch {tr['batch']}, device {tr['device']}, "
                  f"workers {tr['workers']}; mAP of best.pt scored by yololab's evaluator on the val split; GPU "
                  "utilisation and memory sampled by NVML over each side's whole process (start-up and per-epoch "
                  "validation included), memory over the idle baseline", "",
                  "| framework | train images/s | epoch train s | wall s | GPU util mean % | GPU memory peak MiB "
                  "| mAP50 | mAP50-95 |", "|---|---|---|---|---|---|---|---|"]
        for name, r in tr["sides"].items():
            if "skipped" in r or "error" in r:
                lines.append(f"| {name} | {r.get('skipped') or 'failed: ' + r['error'].splitlines()[0]} "
                             "| | | | | | |")
                continue
            util = "-" if r.get("gpu_util_mean") is None else f"{r['gpu_util_mean']:.0f}"
            mem = "-" if r.get("gpu_mem_peak_mib") is None else f"{r['gpu_mem_peak_mib']}"
            lines.append(f"| {name} | {r['images_per_s']:.1f} | {r['epoch_train_s']:.2f} | {r['wall_s']:.0f} | "
                         f"{util} | {mem} | {r['map50']:.3f} | {r['map']:.3f} |")
        if tr["throughput_ours_over_peer"]:
            lines.append(f"\ntrain images/s yololab / peer: x{tr['throughput_ours_over_peer']:.2f}")
        lines.append("")
    if "latency" in report:
        lat = report["latency"]
        lines += [f"Latency of the fused yolov8n at {lat['imgsz']} px (ms per batch, zero input, same random weights "
                  f"on both sides): median / p90 over {lat['rounds']} rounds of {lat['runs']} call(s), all timers "
                  f"alternating, after {lat['warmup']} warm-up calls"
                  + (f"; ONNX Runtime skipped: {lat['onnx_skipped']}" if lat["onnx_skipped"] else ""), "",
                  "| batch | format | yololab median | yololab p90 | peer median | peer p90 | yololab / peer |",
                  "|---|---|---|---|---|---|---|"]
        timings = lat.get("timings", {})
        for key, ours in timings.items():
            if not key.startswith("ours "):
                continue
            fmt, batch = key[len("ours "):].rsplit(" b", 1)
            peer = timings.get(f"peer {fmt} b{batch}")
            ratio = f"{ours['median_ms'] / peer['median_ms']:.2f}" if peer else "-"
            peer_cells = f"{peer['median_ms']:.2f} | {peer['p90_ms']:.2f} | {ratio}" if peer else f"- | - | {ratio}"
            lines.append(f"| {batch} | {fmt} | {ours['median_ms']:.2f} | {ours['p90_ms']:.2f} | {peer_cells} |")
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (out / "gpu_check.md").write_text(markdown(report))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (the test suite runs this)")
    p.add_argument("--data", type=Path, help="data.yaml (default: benchmarks/.gpu-carry/bccd, else ../shared bccd)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or HERE / ".cache" / "gpu_check"),
                   help="folder for gpu_check.json, gpu_check.md and logs (default: $OUT)")
    p.add_argument("--phases", default="tests,train,latency", help="comma-separated subset of tests,train,latency")
    p.add_argument("--epochs", type=int, help="training epochs, the same for both sides")
    p.add_argument("--workers", type=int, help="data loader workers, the same for both sides")
    args = p.parse_args()
    sizes = DRY_RUN if args.dry_run else FULL
    for key, value in sizes.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.device = "cpu" if args.dry_run else "0"
    unknown = set(args.phases.split(",")) - {"tests", "train", "latency"}
    if unknown:
        p.error(f"unknown phase(s) {sorted(unknown)}; choose from tests, train, latency")
    return args


def main() -> int:
    args = parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --dry-run")
    device = torch.device("cpu" if args.dry_run else "cuda:0")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"dry_run": args.dry_run, "environment": environment(device)}
    write(report, args.out)
    phases = args.phases.split(",")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        if "tests" in phases:
            report["tests"] = run_cuda_tests(args.out)
            write(report, args.out)
            print(f"CUDA tests: {report['tests']['summary']}", flush=True)
        if "train" in phases:
            report["train"] = train_both(args, device, args.out, work)
            write(report, args.out)
        if "latency" in phases:
            report["latency"] = latency_both(args, device, args.out, work / "latency")
            write(report, args.out)
    print(markdown(report))
    print(f"written: {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}")
    failed = report.get("tests", {}).get("returncode", 0) not in (0, 5) or any(
        "error" in r for r in report.get("train", {}).get("sides", {}).values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
