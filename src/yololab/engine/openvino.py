"""OpenVINO export (float32 IR, and INT8 by NNCF post-training quantization) and an OpenVINO-backed model.

The IR is made from the fused ONNX export and keeps its contract: input ``images`` (B, 3, H, W) float in [0, 1],
output (B, 4 + nc, anchors) decoded boxes and scores, and the same metadata (names, stride, imgsz ...) in its
runtime info under ``yololab``. openvino and nncf are an optional extra (``pip install 'yololab[openvino]'``),
imported only when an OpenVINO format is asked for. The ONNX file is read by OpenVINO's ONNX front end
(``Core.read_model``) and goes through the graph transformations ``openvino.convert_model`` applies (``to_openvino``);
convert_model itself is not used because it sends usage telemetry (the network), and NNCF's telemetry is switched
off before it is imported.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .exporter import (
    DEFAULT_OPSET,
    check_batch,
    export_metadata,
    export_onnx,
    max_abs_diff,
    parse_names,
    run_in_chunks,
    slim_onnx,
)
from .preprocess import preprocess

EXTRA = "pip install 'yololab[openvino]'"
META_SECTION = "yololab"  # runtime-info section of the IR that holds the metadata
# CPU plugin settings of every compiled model: single-request latency, and float32 arithmetic for the layers that
# are not INT8 (the plugin would otherwise run them in bf16 on CPUs with AVX512-BF16 or AMX, changing the outputs).
CPU_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
# NNCF preset: symmetric weights, asymmetric activations (a SiLU's output spans [-0.28, inf): a symmetric 8-bit grid
# would waste half its codes). Every op is quantized but the head's box decoding (``box_decoding_scope``). Measured
# drop of mAP50-95 from the float32 IR (benchmarks/int8_accuracy.py, 292 BCCD calibration images):
#   yolov8n at 640: 0.18 points with the decoding in float32, 1.59 with it quantized;
#   yolov5n-anchor at 320: 0.24 with it in float32, -0.15 quantized; PERFORMANCE (symmetric activations) 1.25.
INT8_PRESET = "mixed"


def import_openvino() -> Any:
    """The ``openvino`` module, or a UserError naming the extra that installs it."""
    try:
        import openvino
    except ImportError:
        raise UserError(f"OpenVINO formats need the openvino package: {EXTRA}") from None
    return openvino


@functools.cache
def shared_core() -> Any:
    """The one ``openvino.Core`` of this process, never destroyed.

    Each Core's CPU plugin points the calling thread's alternate signal stack (``sigaltstack``) at a buffer of its
    own when it starts and, when it is destroyed, restores the stack it found. Two Cores destroyed in the order they
    were made leave the thread pointing at the first one's freed buffer: the next signal delivered there (Python's
    SIGCHLD or SIGINT handler run on that stack) then crashes the process or corrupts its heap. One Core for the
    whole process starts the plugin once, here, before any other Core (NNCF makes short-lived ones, which then
    restore this one's stack), and never restores a stale one.
    """
    core = import_openvino().Core()
    core.get_property("CPU", "FULL_DEVICE_NAME")  # starts the CPU plugin now
    return core


def import_nncf() -> Any:
    """The ``nncf`` module with its usage telemetry off (yololab works offline), or a UserError naming the extra."""
    os.environ.setdefault("NNCF_CI", "1")  # read when nncf is imported: it then sends no telemetry
    try:
        import nncf
    except ImportError:
        raise UserError(f"INT8 quantization needs the nncf package: {EXTRA}") from None
    return nncf


def export_openvino(model: nn.Module, file: str | Path, *, imgsz: int = 640, batch: int = 1, dynamic: bool = False,
                    simplify: bool = True, opset: int = DEFAULT_OPSET, image: np.ndarray | None = None,
                    calibration: Sequence[Any] | None = None, load: Callable[[Any], np.ndarray] | None = None,
                    verbose: bool = True) -> dict[str, Any]:
    """Export the fused model as float32 OpenVINO IR ``file`` (``.xml`` + ``.bin``) and check it against PyTorch.

    With ``calibration`` (RGB uint8 images, or items ``load`` turns into them) the IR is also quantized to INT8
    (``<stem>-int8.xml``), which then is the result's ``file``. ``max_abs_diff`` compares the float32 IR's decoded
    outputs with PyTorch's on ``image`` (or the built-in sample scene), like the ONNX check.
    """
    import_openvino()  # before any work: a missing extra is reported at once
    if calibration is not None:
        import_nncf()
    file = Path(file).with_suffix(".xml")
    with tempfile.TemporaryDirectory(prefix="yololab-openvino-") as tmp:
        onnx_file = export_onnx(model, Path(tmp) / "model.onnx", imgsz, batch=batch, opset=opset, dynamic=dynamic)
        simplified = simplify and slim_onnx(onnx_file, verbose)
        ov_model = to_openvino(onnx_file)
        save_ir(ov_model, file, export_metadata(model, imgsz=imgsz, batch=batch, dynamic=dynamic, int8=False))
    images = check_batch(image, imgsz, batch)
    diff = max_abs_diff(OpenVinoModel(file), model, images)
    result = {"file": str(file), "format": "openvino", "max_abs_diff": diff, "opset": opset,
              "size_mb": ir_size_mb(file), "imgsz": imgsz, "batch": batch, "dynamic": dynamic, "half": False,
              "simplified": simplified}
    if verbose:
        print(f"exported {file} ({result['size_mb']} MB float32 IR); OpenVINO vs PyTorch max abs diff {diff:.3g}")
    if calibration is not None:
        int8_file = quantize_int8(file, file.with_name(f"{file.stem}-int8.xml"), calibration,
                                  image_transform(imgsz, load), ignored=box_decoding_scope(model), verbose=verbose)
        result.update(file=str(int8_file), format="openvino-int8", fp32_file=str(file),
                      size_mb=ir_size_mb(int8_file), fp32_size_mb=result["size_mb"], calib_images=len(calibration),
                      int8_max_abs_diff=max_abs_diff(OpenVinoModel(int8_file), model, images))
        if verbose:
            print(f"exported {int8_file} ({result['size_mb']} MB INT8 IR); INT8 vs PyTorch max abs diff "
                  f"{result['int8_max_abs_diff']:.3g} (decoded pixels and scores: judge INT8 by its mAP)")
    return result


def to_openvino(onnx_file: Path) -> Any:
    """An ``openvino.Model`` of an ONNX file, transformed as ``openvino.convert_model`` does (its ONNX path).

    The transformations matter: they fuse the ONNX graph's Sigmoid * Multiply pairs into Swish (SiLU) ops and fold
    other patterns (yolov8n: 1,020 ops -> 287). Without them NNCF puts quantizers on every Multiply of every SiLU,
    which breaks the CPU plugin's convolution + activation fusion (yolov8n INT8: 193 quantizers and 755 runtime
    nodes, 235 of them layout reorders, instead of 79 and 252, as many as the peer's own export).
    """
    core = shared_core()  # imports openvino first, or names the missing extra
    from openvino._offline_transformations import (
        apply_fused_names_cleanup,
        apply_moc_legacy_transformations,
        apply_moc_transformations,
    )

    model = core.read_model(str(onnx_file))
    apply_moc_transformations(model, cf=False, smart_reshape=True)
    apply_moc_legacy_transformations(model, [])
    apply_fused_names_cleanup(model)
    return model


def save_ir(model: Any, xml_file: Path, metadata: dict[str, str]) -> Path:
    """Write an ``openvino.Model`` with ``metadata`` in its runtime info; the ``.bin`` goes beside the ``.xml``.

    ``compress_to_fp16=False``: OpenVINO would otherwise store float weights as float16 (half the file, widened
    again when loaded; outputs off by 1-3e-3 relative, measured); yololab keeps float32 so the IR matches PyTorch.
    """
    for key, value in metadata.items():
        model.set_rt_info(value, [META_SECTION, key])
    xml_file.parent.mkdir(parents=True, exist_ok=True)
    import_openvino().save_model(model, str(xml_file), compress_to_fp16=False)
    return xml_file


def ir_size_mb(xml_file: Path) -> float:
    return round((xml_file.stat().st_size + xml_file.with_suffix(".bin").stat().st_size) / 2**20, 3)


def box_decoding_scope(model: nn.Module) -> list[str]:
    """Op-name patterns of the detection head's box decoding in the exported graph: every op of the model's last row
    (the head) but its convolutions, and a DFL's fixed projection. INT8 leaves them in float32 (see ``INT8_PRESET``:
    quantizing them cost yolov8n 1.59 mAP50-95 points at 640 px)."""
    prefix = rf"^/model\.{len(model.model) - 1}/"
    return [prefix + r"(?!.*Conv).*", prefix + r"dfl/.*"]


def quantize_int8(xml_file: Path, int8_file: Path, calibration: Sequence[Any], transform: Callable[[Any], np.ndarray],
                  *, ignored: list[str] | None = None, preset: str = INT8_PRESET, verbose: bool = True) -> Path:
    """Post-training INT8 quantization of a float32 IR by ``nncf.quantize``, saved to ``int8_file``.

    ``transform`` maps a calibration item to the network input (1, 3, H, W) float32; ops matching the ``ignored``
    name patterns stay float32; ``preset`` is NNCF's ``performance`` (symmetric weights and activations) or
    ``mixed`` (asymmetric activations).
    """
    nncf = import_nncf()
    nncf.set_log_level(logging.WARNING)  # its INFO lines list every op it leaves in float32
    model = shared_core().read_model(str(xml_file))
    metadata = {**read_metadata(model), "int8": "true"}
    if verbose:
        print(f"INT8: calibrating on {len(calibration)} images (nncf.quantize, preset {preset.upper()})")
    quantized = nncf.quantize(model, nncf.Dataset(calibration, transform), subset_size=len(calibration),
                              preset=nncf.QuantizationPreset(preset),
                              ignored_scope=nncf.IgnoredScope(patterns=ignored or [], validate=False))
    return save_ir(quantized, int8_file, metadata)


def image_transform(imgsz: int, load: Callable[[Any], np.ndarray] | None = None) -> Callable[[Any], np.ndarray]:
    """Calibration item (an RGB uint8 image, or what ``load`` reads one from) -> network input as a numpy array,
    letterboxed exactly like the predictor does it."""

    def transform(item: Any) -> np.ndarray:
        return preprocess(load(item) if load else item, imgsz)[0].numpy()

    return transform


def calibration_subset(files: Sequence[Path], n: int, seed: int = 0) -> list[Path]:
    """``n`` files drawn without replacement (all of them when there are fewer), in a seeded, repeatable order."""
    if not files:
        raise UserError("INT8 calibration needs training images, and the train split has none")
    return random.Random(seed).sample(list(files), min(n, len(files)))


def read_metadata(model: Any) -> dict[str, str]:
    """The ``yololab`` runtime-info section of an ``openvino.Model`` as strings (empty for other IRs)."""
    if not model.has_rt_info([META_SECTION]):
        return {}
    return {str(k): v.astype(str) for k, v in model.get_rt_info([META_SECTION]).astype(dict).items()}


class OpenVinoModel:
    """An OpenVINO IR (``.xml`` + ``.bin``) run by OpenVINO's CPU plugin, called like a DetectionModel in eval mode.

    ``model(images)`` takes a float tensor (B, 3, H, W) in [0, 1] and returns the decoded ``(B, 4 + nc, anchors)``
    float32 tensor; a fixed batch size is served in chunks. The model is compiled for single-request latency with
    ``threads`` inference threads (default: torch's intra-op threads, i.e. the ``threads=`` setting).
    """

    def __init__(self, file: str | Path, threads: int | None = None):
        file = Path(file)
        if not file.is_file():
            raise FileNotFoundError(f"OpenVINO model not found: {file}")
        if not file.with_suffix(".bin").is_file():
            raise UserError(f"{file}: its weights file {file.with_suffix('.bin').name} is missing beside it")
        core = shared_core()
        try:
            model = core.read_model(str(file))
        except RuntimeError as e:
            raise UserError(f"{file}: not a loadable OpenVINO IR ({' '.join(str(e).split())[:300]})") from None
        self.file = file
        self.threads = threads or torch.get_num_threads()
        self.request = core.compile_model(model, "CPU", {**CPU_CONFIG, "INFERENCE_NUM_THREADS": self.threads}
                                          ).create_infer_request()
        dims = [d.get_length() if d.is_static else None for d in model.input(0).get_partial_shape()]
        self.fixed_batch = dims[0]
        self.input_shape = tuple(dims[2:]) if None not in dims[2:] else None
        meta = read_metadata(model)
        self.stride = int(meta.get("stride", 32))
        self.int8 = meta.get("int8") == "true"
        names = parse_names(meta.get("names", "{}"))
        channels = model.output(0).get_partial_shape()[1]
        self.nc = int(meta["nc"]) if meta.get("nc") else channels.get_length() - 4 if channels.is_static else len(names)
        self.names = names or {i: str(i) for i in range(self.nc)}

    def infer(self, x: np.ndarray) -> np.ndarray:
        """One synchronous inference of a float32 batch of the compiled shape."""
        return self.request.infer({0: x})[0]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return run_in_chunks(self.infer, np.ascontiguousarray(images.detach().cpu().float().numpy()), self)
