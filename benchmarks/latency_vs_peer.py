"""Inference latency side by side: yololab against the peer (Ultralytics 8.4.190), yolov8n, batch 1, CPU.

Weights: a short training run that the script makes once (``--train-epochs`` of yolov8n on ``--data`` at ``--imgsz``
with yololab's defaults, kept in benchmarks/.cache/latency_vs_peer and reused; ``--train-epochs 0``: random
weights). Both sides build yolov8n from their own YAML with the data's class count; the peer loads our state_dict
(strict), so both compute the same outputs (checked). Every format of both sides is scored on the val split by
yololab's validator (exports see square letterboxed images of their size, PyTorch rect batches), so speed is
compared at known accuracy: the INT8 drop of each side, and our fastest format against the peer's.
PyTorch: each framework's own fuse() and eval forward under inference_mode on a zero image, ours in this process and
the peer's in a worker process of its venv (same torch version; the same ``--threads`` on both sides, since the peer
otherwise lowers its own CPU thread count on import).
ONNX: each framework's own exporter (opset 17, simplified with onnxslim), and both files run in this process's
onnxruntime with the same default session options. OpenVINO (float32 and INT8; ``--no-openvino`` leaves them out):
each framework's own OpenVINO export and NNCF INT8 quantization, both calibrated on ``--data``'s training split
(ours draws ``--calib`` images of it, the peer takes them all); every IR runs in this process's OpenVINO CPU plugin
with yololab's settings (``yololab.engine.openvino.CPU_CONFIG``: LATENCY hint, float32 for non-INT8 layers, the
same thread count). The peer's exporter uses ``openvino.convert_model`` and NNCF, whose usage telemetry is switched
off in its worker (``CI=true``, ``NNCF_CI=1``). After ``--warmup`` untimed calls each, the measurements
alternate call by call for ``--rounds`` rounds of ``--runs`` calls (the order flips every round), so a busy machine
slows all of them alike; every call is timed by the same function (``yololab.utils.profile.time_calls``).
Reported: median and p90 over the rounds, the ours / peer ratio of the medians (below 1 = ours faster), and
our fastest format against the peer's ONNX Runtime and against the peer's fastest format.

The peer's exporter imports onnx, onnxslim and onnxruntime (and openvino and nncf), which benchmarks/peer/setup.sh
does not install: its worker appends this venv's site-packages to the end of ``sys.path`` so these (and only
missing modules) resolve to the same versions both sides use.

``--data`` defaults to ../shared/datasets/bccd/data.yaml, else a synthetic set generated once into the cache.

Run: ``.venv/bin/python benchmarks/latency_vs_peer.py [--imgsz 640] [--rounds 40] [--runs 1] [--warmup 5]
[--data data.yaml] [--train-epochs 20] [--calib 300] [--no-openvino] [--record]``; ``--record`` writes the table into
benchmarks/RESULTS.md. Without the peer venv only ours is measured.
"""

from __future__ import annotations

import argparse
import json
import site
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch

from _peer import PEER_PYTHON, peer_available, peer_env

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = ("<!-- latency_vs_peer:start -->", "<!-- latency_vs_peer:end -->")
OPSET = 17
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "bccd" / "data.yaml"
CACHE = ROOT / "benchmarks" / ".cache" / "latency_vs_peer"  # the short training runs and the synthetic fallback set
FORMAT_LABELS = {"torch": "PyTorch (fused)", "onnx": "ONNX Runtime", "openvino": "OpenVINO float32",
                 "openvino-int8": "OpenVINO INT8 (NNCF)"}

# Runs in the peer's venv: builds the peer's yolov8n with our weights, exports it with the peer's exporter, then
# answers timing requests (one JSON line in, one JSON line out) until stdin closes.
PEER_WORKER = textwrap.dedent("""
    import copy, json, sys
    from pathlib import Path
    cfg = json.loads(sys.argv[1])
    reply, sys.stdout = sys.stdout, sys.stderr  # the peer's logging must not mix with the replies
    sys.path.append(cfg["fallback_site"])  # only modules missing in the peer venv (onnx, onnxslim, onnxruntime)
    import numpy as np, torch
    from ultralytics import YOLO

    from yololab.utils import profile  # the same timing function as ours (our sources are on PYTHONPATH)
    torch.set_num_threads(cfg["threads"])  # after the peer's import, which sets its own CPU thread count
    device = torch.device(cfg["device"])
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    from ultralytics.nn.tasks import yaml_model_load
    import yaml
    spec = {**yaml_model_load("yolov8n.yaml"), "nc": cfg["nc"]}  # its own yolov8n with the data's class count
    Path("yolov8n.yaml").write_text(yaml.safe_dump(spec))  # the file name gives its scale (n)
    yolo = YOLO(str(Path("yolov8n.yaml").resolve()))
    yolo.model.load_state_dict(torch.load(cfg["state"], weights_only=True), strict=True)
    onnx_files = {}  # one file per batch size (the exporter always writes the same name)
    for b in cfg["onnx_batches"]:
        exported = Path(yolo.export(format="onnx", imgsz=cfg["imgsz"], opset=cfg["opset"], simplify=True, batch=b))
        onnx_files[str(b)] = str(exported.rename(exported.with_name(f"peer-b{b}.onnx")))
    openvino_files = {}  # the peer's own OpenVINO exports, float32 and INT8 (NNCF, calibrated on cfg["calib_data"])
    if cfg["calib_data"]:
        int8 = {"int8": True, "data": cfg["calib_data"], "split": "train"}  # its default calibration split is val
        for name, extra in (("openvino", {}), ("openvino-int8", int8)):
            folder = Path(yolo.export(format="openvino", imgsz=cfg["imgsz"], half=False, **extra))
            openvino_files[name] = str(next(folder.glob("*.xml")).resolve())
    torch.set_num_threads(cfg["threads"])  # again: its exporters change the count too
    model = yolo.model.fuse().eval().to(device)
    models = {False: model, True: None}  # fp32, and an fp16 copy made on first request
    with torch.inference_mode():
        y = model(torch.from_numpy(np.load(cfg["check_in"])).to(device))
        np.save(cfg["check_out"], (y[0] if isinstance(y, (list, tuple)) else y).float().cpu().numpy())
        print(json.dumps({"onnx": onnx_files, "openvino": openvino_files, "threads": torch.get_num_threads(),
                          "torch": torch.__version__}),
              file=reply, flush=True)
        for line in sys.stdin:
            req = json.loads(line)
            half = req.get("half", False)
            if models[half] is None:
                models[half] = copy.deepcopy(model).half()
            x = torch.zeros(req.get("batch", 1), 3, cfg["imgsz"], cfg["imgsz"], device=device,
                            dtype=torch.float16 if half else torch.float32)
            stats = profile.time_calls(lambda: models[half](x), warmup=req["warmup"], runs=req["runs"], sync=sync)
            print(json.dumps(stats), file=reply, flush=True)
""")


class PeerWorker:
    """The peer's model in a long-lived process of its venv, timed on request."""

    def __init__(self, state_file: Path, check_in: Path, imgsz: int, threads: int, workdir: Path,
                 device: str = "cpu", onnx_batches: tuple[int, ...] = (1,), calib_data: Path | None = None,
                 nc: int = 80):
        cfg = {"state": str(state_file), "check_in": str(check_in), "check_out": str(workdir / "peer_out.npy"),
               "nc": nc,
               "imgsz": imgsz, "threads": threads, "opset": OPSET, "device": device, "onnx_batches": list(onnx_batches),
               "fallback_site": site.getsitepackages()[0], "calib_data": str(calib_data) if calib_data else ""}
        env = peer_env()
        if calib_data:  # its OpenVINO exports: OpenVINO's and NNCF's usage telemetry off (no network)
            env.update(CI="true", NNCF_CI="1")
        self.proc = subprocess.Popen([str(PEER_PYTHON), "-c", PEER_WORKER, json.dumps(cfg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(workdir / "peer.log", "w"), text=True,
                                     cwd=workdir, env=env)
        self.info = self._read(workdir)
        self.output = np.load(workdir / "peer_out.npy")

    def _read(self, workdir: Path) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            tail = "\n".join((workdir / "peer.log").read_text().splitlines()[-10:])
            raise SystemExit(f"the peer worker stopped:\n{tail}")
        return json.loads(line)

    def time(self, warmup: int, runs: int, workdir: Path, batch: int = 1, half: bool = False) -> dict:
        """Latency of the fused peer model on a zero batch (``half``: its float16 copy)."""
        self.proc.stdin.write(json.dumps({"warmup": warmup, "runs": runs, "batch": batch, "half": half}) + "\n")
        self.proc.stdin.flush()
        return self._read(workdir)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def onnx_timer(file: str | Path, device: str = "cpu"):
    """A function timing one onnxruntime session (CUDA provider for a CUDA ``device``) on a zero input of the
    file's fixed batch size."""
    from yololab.engine.exporter import OnnxModel
    from yololab.utils.profile import time_calls

    onnx_model = OnnxModel(file, device)
    shape = [onnx_model.fixed_batch or 1, 3, *onnx_model.input_shape]
    feed = {onnx_model.input_name: np.zeros(shape, np.float32)}
    return lambda warmup, runs: time_calls(lambda: onnx_model.session.run(None, feed), warmup=warmup, runs=runs)


def openvino_timer(file: str | Path):
    """A function timing synchronous inference of an OpenVINO IR (yololab's CPU plugin settings) on a zero input."""
    from yololab.engine.openvino import OpenVinoModel
    from yololab.utils.profile import time_calls

    ir = OpenVinoModel(file)
    x = np.zeros((ir.fixed_batch or 1, 3, *ir.input_shape), np.float32)
    return lambda warmup, runs: time_calls(lambda: ir.infer(x), warmup=warmup, runs=runs)


def benchmark_data(args: argparse.Namespace) -> Path:
    """The data.yaml that trains the weights, calibrates both sides' INT8 and scores every format: ``--data``, else
    BCCD from ../shared, else a synthetic set generated once into the cache."""
    from yololab.data import make_synthetic

    if args.data:
        return Path(args.data).resolve()
    if DEFAULT_DATA.is_file():
        return DEFAULT_DATA.resolve()
    synthetic = CACHE / f"synthetic-{args.imgsz}"
    if not (synthetic / "data.yaml").is_file():
        make_synthetic(synthetic, n_train=args.calib, n_val=64, imgsz=args.imgsz, seed=0)
    return synthetic / "data.yaml"


def trained_model(data: Path, args: argparse.Namespace):
    """yolov8n (eval) with the weights of ``--train-epochs`` of training on ``data`` at ``--imgsz``, trained once by
    ``yololab train`` (resumed if it was interrupted) and then reused; random weights for ``--train-epochs 0``."""
    from yololab.checkpoint import model_from_checkpoint
    from yololab.data import load_data_config
    from yololab.nn import DetectionModel

    if args.train_epochs == 0:
        torch.manual_seed(0)
        return DetectionModel("yolov8n.yaml", nc=load_data_config(data).nc).eval()
    run = CACHE / f"{data.parent.name}-yolov8n-e{args.train_epochs}-s{args.imgsz}"
    weights = run / "train" / "weights"
    if not (weights / "best.pt").is_file():
        print(f"training yolov8n on {data} for {args.train_epochs} epochs at {args.imgsz} px (made once, kept in {run})",
              flush=True)
        start = ([f"resume={weights / 'last.pt'}"] if (weights / "last.pt").is_file() else
                 ["model=yolov8n.yaml", f"data={data}", f"epochs={args.train_epochs}", f"imgsz={args.imgsz}",
                  "batch=16", "workers=2", f"project={run}", "name=train", "exist_ok=true", "plots=false"])
        subprocess.run([sys.executable, "-m", "yololab", "train", *start], check=True)
    return model_from_checkpoint(weights / "best.pt").eval()


def score(model, data: Path, imgsz: int) -> dict[str, float]:
    """mAP50-95 and mAP50 of a model or exported model on ``data``'s val split, by yololab's validator."""
    from yololab.engine.validator import validate

    metrics = validate(model, str(data), imgsz=imgsz, verbose=False)
    return {"map": metrics["map"], "map50": metrics["map50"]}


def peer_data_yaml(data_yaml: Path, workdir: Path) -> Path:
    """A copy of ``data_yaml`` whose ``path`` is absolute: yololab reads a relative one against the file's folder,
    the peer against its own datasets folder."""
    import yaml

    cfg = yaml.safe_load(data_yaml.read_text())
    cfg["path"] = str((data_yaml.parent / str(cfg.get("path") or ".")).resolve())
    out = workdir / "peer-calib.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="PyTorch CPU threads, the same for both sides (default: torch's default here)")
    parser.add_argument("--data", help="data.yaml that trains the weights, calibrates INT8 and scores every format "
                                       "(default: BCCD from ../shared, else a generated synthetic set)")
    parser.add_argument("--train-epochs", type=int, default=20,
                        help="epochs of the short training that makes the weights, once (0: random weights)")
    parser.add_argument("--calib", type=int, default=300, help="INT8 calibration images")
    parser.add_argument("--no-openvino", dest="openvino", action="store_false", help="leave OpenVINO out")
    parser.add_argument("--record", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from yololab.engine.exporter import export
    from yololab.engine.predictor import as_inference_model
    from yololab.utils.profile import time_calls
    from yololab.utils.torch_utils import fused_copy

    data = benchmark_data(args)
    model = trained_model(data, args)
    fused = fused_copy(model)
    x = torch.zeros(1, 3, args.imgsz, args.imgsz)
    timers, files = {}, {}  # files: the exported models of both sides, scored on the val split
    with tempfile.TemporaryDirectory(prefix="latency-vs-peer-") as tmp:
        workdir = Path(tmp)
        files["ours onnx"] = export(model, workdir / "ours.onnx", imgsz=args.imgsz, opset=OPSET, simplify=True,
                                    verbose=False)["file"]
        timers["ours torch"] = lambda w, r: time_calls(lambda: fused(x), warmup=w, runs=r)
        timers["ours onnx"] = onnx_timer(files["ours onnx"])
        if args.openvino:
            from yololab.data import load_data_config, load_image
            from yololab.engine.openvino import calibration_subset, export_openvino

            images = calibration_subset(load_data_config(data).split("train"), args.calib)
            ours_ir = export_openvino(model, workdir / "ours.xml", imgsz=args.imgsz, opset=OPSET, calibration=images,
                                      load=load_image, verbose=False)
            files.update({"ours openvino": ours_ir["fp32_file"], "ours openvino-int8": ours_ir["file"]})
            timers["ours openvino"] = openvino_timer(ours_ir["fp32_file"])
            timers["ours openvino-int8"] = openvino_timer(ours_ir["file"])
        peer = None
        if peer_available():
            torch.save(model.state_dict(), workdir / "state.pt")
            check = torch.rand(1, 3, args.imgsz, args.imgsz)
            np.save(workdir / "check_in.npy", check.numpy())
            peer = PeerWorker(workdir / "state.pt", workdir / "check_in.npy", args.imgsz, torch.get_num_threads(),
                              workdir, calib_data=peer_data_yaml(data, workdir) if args.openvino else None,
                              nc=model.nc)
            with torch.inference_mode():
                ref = model(check).numpy()
            rel = float(np.abs(peer.output - ref).max() / np.abs(ref).max())
            print(f"peer ready (torch {peer.info['torch']}, {peer.info['threads']} threads); "
                  f"same weights, eval outputs max rel diff {rel:.2e}")
            timers["peer torch"] = lambda w, r: peer.time(w, r, workdir)
            files["peer onnx"] = str(workdir / peer.info["onnx"]["1"])
            timers["peer onnx"] = onnx_timer(files["peer onnx"])
            for name, file in peer.info["openvino"].items():
                files[f"peer {name}"] = file
                timers[f"peer {name}"] = openvino_timer(file)
        else:
            print("peer not installed (run benchmarks/peer/setup.sh); measuring ours only")
        print(f"scoring {len(files) + 1} models on the val split of {data} ...", flush=True)
        accuracy = {"ours torch": score(fused, data, args.imgsz)}
        accuracy.update({name: score(as_inference_model(str(file), "cpu"), data, args.imgsz)
                         for name, file in files.items()})
        if peer is not None:
            accuracy["peer torch"] = accuracy["ours torch"]  # the same weights and outputs (checked above)
        with torch.inference_mode():
            stats = run_rounds(timers, args)
        if peer is not None:
            peer.close()
    table = format_table(stats, accuracy, args, data)
    print(table)
    if args.record:
        record(table)
    return 0


def run_rounds(timers: dict, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Warm every timer up, then alternate them (``--runs`` calls each per round, the order flipping every round).

    All of them see the same machine load; returns the median and p90 over the rounds' medians.
    """
    for timer in timers.values():
        timer(args.warmup, 1)
    rounds: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            rounds[name].append(timers[name](0, args.runs)["median_ms"])
        if (r + 1) % 10 == 0 or r + 1 == args.rounds:
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {statistics.median(v):.1f}"
                                                                for n, v in rounds.items()), flush=True)
    return {name: {"median_ms": statistics.median(v), "p90_ms": sorted(v)[min(len(v) - 1, int(0.9 * len(v)))]}
            for name, v in rounds.items()}


def format_table(stats: dict[str, dict[str, float]], accuracy: dict[str, dict[str, float]],
                 args: argparse.Namespace, data: Path) -> str:
    """Markdown table: per format ours and peer median / p90 ms and val mAP50-95, the ours / peer ratio, then the
    INT8 drops and our fastest format against the peer's ONNX Runtime and the peer's fastest format."""
    from yololab.utils.profile import machine_summary

    weights = (f"weights: {args.train_epochs} epochs of yolov8n on {data.parent.name} at {args.imgsz} px"
               if args.train_epochs else "random weights")
    lines = [f"yolov8n, {args.imgsz} px, batch 1, CPU ({machine_summary()}); {args.rounds} rounds of {args.runs} "
             f"call(s) alternating between all {len(stats)} after {args.warmup} warm-up calls; ms per image; "
             f"{weights}; mAP50-95 on its val split by yololab's validator", "",
             "| format | ours median | ours p90 | ours mAP50-95 | peer median | peer p90 | peer mAP50-95 "
             "| ours / peer (median) |", "|---|---|---|---|---|---|---|---|"]
    for fmt, label in FORMAT_LABELS.items():
        ours, peer = stats.get(f"ours {fmt}"), stats.get(f"peer {fmt}")
        if ours is None:
            continue
        peer_cells = (f"{peer['median_ms']:.1f} | {peer['p90_ms']:.1f} | {accuracy[f'peer {fmt}']['map']:.4f} | "
                      f"{ours['median_ms'] / peer['median_ms']:.3f}" if peer else "peer not measured | - | - | -")
        lines.append(f"| {label} | {ours['median_ms']:.1f} | {ours['p90_ms']:.1f} | "
                     f"{accuracy[f'ours {fmt}']['map']:.4f} | {peer_cells} |")
    lines.append("")
    for side in ("ours", "peer"):
        if f"{side} openvino-int8" in accuracy:
            drop = 100 * (accuracy[f"{side} openvino"]["map"] - accuracy[f"{side} openvino-int8"]["map"])
            lines.append(f"{side} INT8 mAP50-95 drop from OpenVINO float32: {drop:.2f} points")
    best = {side: min((v["median_ms"], k.split(" ", 1)[1]) for k, v in stats.items() if k.startswith(side))
            for side in ("ours", "peer") if any(k.startswith(side) for k in stats)}
    if "peer" in best:
        (ours_ms, ours_fmt), (peer_ms, peer_fmt) = best["ours"], best["peer"]
        lines.append(f"our fastest ({ours_fmt}, mAP50-95 {accuracy[f'ours {ours_fmt}']['map']:.4f}) / peer ONNX "
                     f"Runtime: {ours_ms / stats['peer onnx']['median_ms']:.3f}; / peer's fastest ({peer_fmt}, "
                     f"mAP50-95 {accuracy[f'peer {peer_fmt}']['map']:.4f}): {ours_ms / peer_ms:.3f}")
    return "\n".join(lines)


def record(table: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md."""
    body = f"{SECTION[0]}\n## Inference latency vs peer (`benchmarks/latency_vs_peer.py`)\n\n{table}\n{SECTION[1]}"
    text = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    if SECTION[0] in text:
        start, end = text.index(SECTION[0]), text.index(SECTION[1]) + len(SECTION[1])
        text = text[:start] + body + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    RESULTS.write_text(text)
    print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
