"""Latency benchmark of a fused model per format (PyTorch, ONNX Runtime, OpenVINO float32 and INT8) and device (CPU,
CUDA when present)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import load_image
from ..data.synthetic import make_large_scene
from ..errors import UserError
from ..utils.profile import machine_summary, measure_latency, time_calls
from ..utils.torch_utils import fused_copy, select_device
from .exporter import OnnxModel, export_onnx
from .openvino import OpenVinoModel, export_openvino

BENCH_FORMATS = ("torch", "onnx", "openvino", "openvino-int8")
SYNTHETIC_CALIBRATION = 32  # synthetic scenes that calibrate openvino-int8 when no training images are given


def parse_formats(formats: str | list[str] | tuple[str, ...]) -> list[str]:
    """``'torch,onnx'`` or a list -> validated format names."""
    names = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in names if f not in BENCH_FORMATS]
    if unknown or not names:
        raise UserError(f"unknown bench format(s) {unknown or formats!r}; choose from {', '.join(BENCH_FORMATS)}")
    return names


def bench_devices(device: str | int | None) -> list[torch.device]:
    """The given device, or CPU plus CUDA when available if none is given."""
    if device is None or str(device).strip() == "":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [select_device(device)]


def bench(model: nn.Module, *, imgsz: int = 640, batch: int = 1, formats: str | list[str] = ("torch", "onnx"),
          runs: int = 50, warmup: int = 10, device: str | int | None = None, verbose: bool = True,
          calibration: Sequence[Path] | None = None) -> dict[str, Any]:
    """Median and p90 latency (ms per batch, zero input) of the fused model for every format and device.

    ``openvino-int8`` is calibrated on the ``calibration`` image files, else on synthetic scenes (with a warning:
    its latency is then real, its accuracy unknown). OpenVINO formats run on the CPU only.
    """
    formats = parse_formats(formats)
    model = fused_copy(model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="yololab-bench-") as tmp:
        onnx_file = export_onnx(model, Path(tmp) / "model.onnx", imgsz, batch=batch, fuse=False) if "onnx" in formats else None
        ir_files = _openvino_files(model, Path(tmp), formats, imgsz, batch, calibration, verbose)
        for dev in bench_devices(device):
            for fmt in formats:
                row = {"format": fmt, "device": str(dev)}
                if fmt == "torch":
                    row.update(measure_latency(model.to(dev), imgsz, batch=batch, warmup=warmup, runs=runs, fuse=False))
                elif fmt == "onnx":
                    row.update(_onnx_latency(onnx_file, dev, imgsz, batch, warmup, runs))
                elif dev.type != "cpu":
                    row["skipped"] = "OpenVINO runs on the CPU here"
                else:
                    row.update(_openvino_latency(ir_files[fmt], imgsz, batch, warmup, runs))
                rows.append(row)
    result = {"imgsz": imgsz, "batch": batch, "runs": runs, "warmup": warmup, "threads": torch.get_num_threads(),
              "machine": machine_summary(), "results": rows}
    if verbose:
        print(format_bench(result))
    return result


def _onnx_latency(file: Path, device: torch.device, imgsz: int, batch: int, warmup: int, runs: int) -> dict:
    try:
        onnx_model = OnnxModel(file, device)
    except ValueError as e:  # no CUDA provider in this onnxruntime
        return {"skipped": str(e)}
    feed = {onnx_model.input_name: np.zeros((batch, 3, imgsz, imgsz), onnx_model.dtype)}
    return time_calls(lambda: onnx_model.session.run(None, feed), warmup=warmup, runs=runs)


def _openvino_files(model: nn.Module, tmp: Path, formats: list[str], imgsz: int, batch: int,
                    calibration: Sequence[Path] | None, verbose: bool) -> dict[str, Path]:
    """The float32 (and, if asked for, INT8) IR of the fused model, by bench format name."""
    if not {"openvino", "openvino-int8"} & set(formats):
        return {}
    items, load = None, None
    if "openvino-int8" in formats and calibration is not None:
        items, load = calibration, load_image
    elif "openvino-int8" in formats:
        if verbose:
            print(f"warning: openvino-int8 is calibrated on {SYNTHETIC_CALIBRATION} synthetic scenes (no data= "
                  "given): its latency is real, its accuracy unknown")
        items = [make_large_scene(imgsz, imgsz, n_objects=12, object_px=(8, imgsz // 4), seed=i)[0]
                 for i in range(SYNTHETIC_CALIBRATION)]
    result = export_openvino(model, tmp / "model.xml", imgsz=imgsz, batch=batch, calibration=items, load=load,
                             verbose=False)
    return {"openvino": Path(result.get("fp32_file", result["file"])), "openvino-int8": Path(result["file"])}


def _openvino_latency(file: Path, imgsz: int, batch: int, warmup: int, runs: int) -> dict:
    """Synchronous single-request latency on OpenVINO's CPU plugin (LATENCY hint, the ``threads=`` setting)."""
    ov_model = OpenVinoModel(file)
    x = np.zeros((batch, 3, imgsz, imgsz), np.float32)
    return time_calls(lambda: ov_model.infer(x), warmup=warmup, runs=runs)


def format_bench(result: dict[str, Any]) -> str:
    """The benchmark rows as an aligned table."""
    lines = [f"latency at {result['imgsz']}px, batch {result['batch']}, {result['runs']} runs after "
             f"{result['warmup']} warm-up (fused model); {result['machine']}",
             f"{'format':<13} {'device':<8} {'median ms':>10} {'p90 ms':>10}"]
    for r in result["results"]:
        if "skipped" in r:
            lines.append(f"{r['format']:<13} {r['device']:<8} skipped: {r['skipped']}")
        else:
            lines.append(f"{r['format']:<13} {r['device']:<8} {r['median_ms']:>10.2f} {r['p90_ms']:>10.2f}")
    return "\n".join(lines)
