"""ONNX export of fused detection models, the onnxruntime equivalence check, and an ONNX-backed model.

The exported graph has one input ``images`` (B, 3, H, W) float in [0, 1] and one output ``output0``
(B, 4 + nc, anchors): decoded xywh pixel boxes and class scores, the layout the predictor feeds to NMS.
Class names, stride and input size travel in the ONNX metadata.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..errors import UserError
from ..utils.torch_utils import fused_copy
from .preprocess import preprocess, sample_image

DEFAULT_OPSET = 17
FORMATS = ("onnx",)


def export_onnx(model: nn.Module, file: str | Path, imgsz: int | tuple[int, int] = 640, *, batch: int = 1,
                opset: int = DEFAULT_OPSET, dynamic: bool = False, fuse: bool = True, half: bool = False) -> Path:
    """Export a (by default fused copy of the) model in eval mode; output ``(B, 4 + nc, anchors)`` decoded.

    The copy stays on the model's device; ``half=True`` exports float16 weights and input (CUDA only).
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    model = fused_copy(model, fuse)
    device = _device_of(model)
    if half and device.type != "cuda":
        raise UserError("half=true exports float16 and needs a CUDA device (device=0); CPU export is float32 only")
    if half:
        model.half()
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(batch, 3, h, w, device=device, dtype=torch.float16 if half else torch.float32)
    dynamic_axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(file), opset_version=opset, dynamo=False,
                          input_names=["images"], output_names=["output0"],
                          dynamic_axes=dynamic_axes if dynamic else None)
    return file


def onnx_max_abs_diff(file: str | Path, model: nn.Module, images: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime and PyTorch (eval mode) outputs on ``images``."""
    return max_abs_diff(OnnxModel(file), model, images)


def max_abs_diff(exported: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, images: torch.Tensor) -> float:
    """Largest absolute difference between an exported model's and PyTorch's (eval mode) outputs on ``images``."""
    out = exported(images).numpy()
    model = model.eval()
    p = next(model.parameters())
    with torch.no_grad():
        torch_out = model(images.to(p.device, p.dtype)).float().cpu().numpy()
    if out.shape != torch_out.shape:
        raise ValueError(f"exported output shape {out.shape} != PyTorch {torch_out.shape}")
    return float(np.abs(out - torch_out).max())


def export(model: nn.Module, file: str | Path, *, format: str = "onnx", imgsz: int = 640, batch: int = 1,
           dynamic: bool = False, half: bool = False, simplify: bool = True, opset: int = DEFAULT_OPSET,
           image: np.ndarray | None = None, verbose: bool = True) -> dict[str, Any]:
    """Export the fused model, embed its metadata, optionally slim the graph, and check it with onnxruntime.

    ``image`` (RGB uint8) is letterboxed to ``imgsz`` and run through PyTorch and onnxruntime; the
    returned dict holds ``file``, ``max_abs_diff`` (decoded outputs before NMS), ``opset``, ``size_mb``.
    """
    if format not in FORMATS:
        raise UserError(f"unknown export format '{format}'; supported: {', '.join(FORMATS)}")
    file = export_onnx(model, file, imgsz, batch=batch, opset=opset, dynamic=dynamic, half=half)
    simplified = simplify and slim_onnx(file, verbose)
    _write_metadata(file, model, imgsz=imgsz, batch=batch, dynamic=dynamic, half=half)
    images = check_batch(image, imgsz, batch)
    diff = onnx_max_abs_diff(file, model, images)
    result = {"file": str(file), "format": format, "max_abs_diff": diff, "opset": opset,
              "size_mb": round(file.stat().st_size / 2**20, 3), "imgsz": imgsz, "batch": batch, "dynamic": dynamic,
              "half": half, "simplified": simplified}
    if verbose:
        print(f"exported {file} ({result['size_mb']} MB, opset {opset}{', slimmed' if simplified else ''}); "
              f"onnxruntime vs PyTorch max abs diff {diff:.3g}")
    return result


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def slim_onnx(file: Path, verbose: bool) -> bool:
    """Simplify the graph in place with onnxslim; False (with a note) when it is not installed."""
    try:
        import onnxslim
    except ImportError:
        if verbose:
            print("note: onnxslim is not installed; exporting without simplification")
        return False
    import onnx

    onnx.save(onnxslim.slim(str(file)), str(file))
    return True


def export_metadata(model: nn.Module, **fields: Any) -> dict[str, str]:
    """Names, stride, nc, yololab version, model file and export ``fields`` as strings (ONNX and IR metadata)."""
    stride = int(max(getattr(model, "stride", torch.tensor([32.0])).tolist()))
    return {"names": json.dumps(getattr(model, "names", {})), "nc": str(getattr(model, "nc", "")),
            "stride": str(stride), "yololab": __version__,
            "model": str(getattr(model, "yaml", {}).get("yaml_file", "")),
            **{k: json.dumps(v) for k, v in fields.items()}}


def _write_metadata(file: Path, model: nn.Module, **fields: Any) -> None:
    """Store ``export_metadata`` as ONNX metadata_props (read back by OnnxModel)."""
    import onnx

    proto = onnx.load(str(file))
    del proto.metadata_props[:]
    for key, value in export_metadata(model, **fields).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(file))


def check_batch(image: np.ndarray | None, imgsz: int, batch: int) -> torch.Tensor:
    """The check input: ``image`` (or the built-in sample scene) letterboxed, repeated ``batch`` times."""
    x, _ = preprocess(sample_image() if image is None else image, imgsz)
    return x.repeat(batch, 1, 1, 1)


def parse_names(text: str) -> dict[int, str]:
    """Class names from ONNX metadata: our JSON, or the Python dict literal other exporters write."""
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        try:
            names = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return {}
    return {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}


class OnnxModel:
    """An exported detector run by onnxruntime, called like a DetectionModel in eval mode.

    ``model(images)`` takes a float tensor (B, 3, H, W) in [0, 1] and returns the decoded
    ``(B, 4 + nc, anchors)`` float32 tensor. A fixed batch size is served in chunks.
    """

    def __init__(self, file: str | Path, device: str | torch.device = "cpu"):
        import onnxruntime as ort

        file = Path(file)
        if not file.is_file():
            raise FileNotFoundError(f"ONNX model not found: {file}")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError("this onnxruntime has no CUDAExecutionProvider; use device=cpu for ONNX models")
            providers.insert(0, "CUDAExecutionProvider")
        self.file = file
        try:
            self.session = ort.InferenceSession(str(file), providers=providers)
        except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...) derive from Exception
            raise UserError(f"{file}: not a loadable ONNX model ({' '.join(str(e).split())[:300]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.input_shape = tuple(inp.shape[2:]) if all(isinstance(s, int) for s in inp.shape[2:]) else None
        self.stride = int(meta.get("stride", 32))
        nc = self.session.get_outputs()[0].shape[1]
        names = parse_names(meta.get("names", "{}"))
        self.nc = int(meta["nc"]) if meta.get("nc") else nc - 4 if isinstance(nc, int) else len(names)
        self.names = names or {i: str(i) for i in range(self.nc)}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().cpu().numpy().astype(self.dtype)
        return run_in_chunks(lambda chunk: self.session.run(None, {self.input_name: chunk})[0], x, self)


def run_in_chunks(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, exported: Any) -> torch.Tensor:
    """``run`` over the batch ``x`` in chunks of an exported model's ``fixed_batch`` (the last one zero-padded), as one
    float32 tensor; an input size other than the model's fixed ``input_shape`` is an error naming its ``file``."""
    if exported.input_shape is not None and tuple(x.shape[2:]) != exported.input_shape:
        raise UserError(f"{exported.file.name} was exported for input {exported.input_shape}, got "
                        f"{tuple(x.shape[2:])}; export with dynamic=true for other sizes")
    step = exported.fixed_batch or len(x)
    outputs = []
    for i in range(0, len(x), step):
        chunk = x[i:i + step]
        n = len(chunk)
        if n < step:
            chunk = np.concatenate((chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)))
        outputs.append(np.asarray(run(chunk))[:n])
    return torch.from_numpy(np.concatenate(outputs).astype(np.float32))
