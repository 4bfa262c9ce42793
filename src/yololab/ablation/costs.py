"""What a model costs at inference: params, GFLOPs and fused CPU latency (PyTorch and ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..api import YOLO, model_summary
from ..engine.bench import bench


def measure_costs(model: str, imgsz: int, nc: int | None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Params, GFLOPs and fused CPU latency (PyTorch and ONNX Runtime) of a model config at ``imgsz``."""
    yolo = YOLO(model, nc=nc)
    summary = model_summary(yolo.model, imgsz)
    latency = {r["format"]: r.get("median_ms") for r in
               bench(yolo.model, imgsz=imgsz, device="cpu", verbose=False)["results"]}
    cost = {"params": summary["params"], "gflops": summary["gflops"], "latency_ms": latency.get("torch"),
            "onnx_latency_ms": latency.get("onnx")}
    log(f"{Path(model).stem}: {cost['params']:,} params, {cost['gflops']:.2f} GFLOPs, "
        f"{cost['latency_ms']:.1f} ms PyTorch / {cost['onnx_latency_ms']:.1f} ms ONNX Runtime (CPU, fused)")
    return cost
