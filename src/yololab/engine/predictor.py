"""Prediction on images, folders, globs, videos and file lists, with sliced inference for small objects.

Images are handled in RGB. Preprocessing matches validation: resize the long side to ``imgsz``
(area interpolation when shrinking), then letterbox to ``imgsz`` x ``imgsz``. Sliced inference cuts
the image into overlapping ``slice``-pixel tiles, runs each tile (and optionally the whole image) at
``imgsz`` and merges all detections with class-wise NMS.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import torch
from torch import nn

from ..checkpoint import load_model
from ..data.config import read_list_file
from ..data.image import IMG_SUFFIXES, load_image
from ..data.records import coco_image_ids
from ..errors import UserError
from ..ops import non_max_suppression, unletterbox_boxes
from ..utils.files import write_json
from ..utils.torch_utils import CompiledModel, fused_copy, select_device
from .exporter import OnnxModel
from .openvino import OpenVinoModel
from .preprocess import check_imgsz, preprocess
from .results import Results

VIDEO_SUFFIXES = (".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".webm", ".wmv")
SLICE_BATCH = 8  # tiles per forward pass in sliced inference


# --- models


class TorchModel:
    """A detector prepared for inference (eval mode, on one device, float32 or float16, compiled with ``compile``).

    Called with a float tensor (B, 3, H, W) in [0, 1]; returns the decoded (B, 4 + nc, anchors) in float32.
    """

    input_shape = None  # any multiple of the stride

    def __init__(self, model: nn.Module, device: torch.device | None = None, half: bool = False,
                 compile: bool = False):
        p = next(model.parameters())
        self.device = device or p.device
        if half and self.device.type != "cuda":
            raise UserError("half=true needs a CUDA device (float16 inference on CPU is not supported)")
        self.model = model.to(self.device).eval()
        self.dtype = torch.float16 if half else p.dtype
        if half:
            self.model.half()
        self.names = getattr(model, "names", {})
        self.stride = int(max(getattr(model, "stride", torch.tensor([32.0])).tolist()))
        self.forward = CompiledModel(self.model) if compile else self.model

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.forward(images.to(self.device, self.dtype)).float()


EXPORTED_MODELS = (OnnxModel, OpenVinoModel)
EXPORTED_SUFFIXES = (".onnx", ".xml")  # what `model=` paths of exported models end with
InferenceModel = TorchModel | OnnxModel | OpenVinoModel


def as_inference_model(model: Any, device: str | torch.device | None = None, half: bool = False,
                       fuse: bool = True, compile: bool = False) -> InferenceModel:
    """Wrap a DetectionModel, a ``YOLO``, or a checkpoint / YAML / ``.onnx`` / OpenVINO ``.xml`` path for inference.

    Modules are fused on a copy when ``fuse`` (the caller's model is left untouched); with ``fuse=False``
    the module itself is used (the validator's case: it is already in eval mode). ``device=None`` keeps
    the model's device (CPU for exported models). ``compile`` runs a PyTorch model through ``torch.compile``.
    """

    if isinstance(model, (TorchModel, *EXPORTED_MODELS)):
        return model
    if isinstance(model, (str, Path)) and str(model).endswith(EXPORTED_SUFFIXES):
        if half:
            raise UserError("half applies to PyTorch models; export with half=true for a float16 ONNX model")
        if compile:
            raise UserError(f"compile=true applies to PyTorch models, not to {Path(model).name} (its runtime "
                            "optimizes its own graph)")
        if str(model).endswith(".xml"):
            if select_device(device or "cpu").type != "cpu":
                raise UserError(f"{model}: OpenVINO models run on the CPU here; use device=cpu")
            return OpenVinoModel(model)
        return OnnxModel(model, select_device(device or "cpu"))
    if isinstance(model, (str, Path)):
        model = load_model(model)
    if not isinstance(model, nn.Module):
        model = getattr(model, "model", model)  # a YOLO
    if not isinstance(model, nn.Module):
        raise TypeError(f"cannot predict with a {type(model).__name__}; give a DetectionModel, YOLO or model path")
    if fuse:
        model = fused_copy(model)
    return TorchModel(model, None if device is None else select_device(device), half, compile)


# --- preprocessing and detection


def input_size(model: InferenceModel, imgsz: int) -> int:
    """The square network input side: ``imgsz``, or the fixed size an exported model was exported with."""
    if model.input_shape is None:
        return check_imgsz(imgsz, model.stride)
    h, w = model.input_shape
    if h != w:
        raise UserError(f"{model.file.name} has a non-square input {h}x{w}; the predictor letterboxes to squares")
    return h


def detect(model: InferenceModel, images: list[np.ndarray], *, imgsz: int = 640, conf: float = 0.25,
           iou: float = 0.7, max_det: int = 300, speed: dict[str, float] | None = None) -> list[torch.Tensor]:
    """Whole-image detection of a batch of RGB images -> per image (n, 6) x1 y1 x2 y2 conf cls, original pixels.

    ``speed`` (if given) accumulates preprocess / inference / postprocess milliseconds.
    """
    t0 = time.perf_counter()
    inputs = [preprocess(img, input_size(model, imgsz)) for img in images]
    batch = torch.cat([x for x, _ in inputs])
    t1 = time.perf_counter()
    pred = model(batch).cpu()  # the copy waits for the device, so inference time is complete
    t2 = time.perf_counter()
    dets = non_max_suppression(pred, conf=conf, iou=iou, max_det=max_det)
    for det, (_, ratio_pad), img in zip(dets, inputs, images):
        det[:, :4] = unletterbox_boxes(det[:, :4], ratio_pad, img.shape[:2])
    if speed is not None:
        for key, dt in zip(("preprocess", "inference", "postprocess"), (t1 - t0, t2 - t1, time.perf_counter() - t2)):
            speed[key] = speed.get(key, 0.0) + dt * 1000
    return dets


def slice_windows(height: int, width: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Tiles ``(x1, y1, x2, y2)`` of side ``size`` covering the image, neighbours overlapping by ``overlap``.

    The last tile of a row/column is aligned to the image border; an image side shorter than ``size``
    gets one tile spanning it.
    """
    if size < 32:
        raise UserError(f"slice must be at least 32 pixels, got {size}")
    if not 0 <= overlap < 1:
        raise UserError(f"overlap must be in [0, 1), got {overlap}")
    step = max(1, round(size * (1 - overlap)))

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        return [*range(0, length - size, step), length - size]

    return [(x, y, min(x + size, width), min(y + size, height)) for y in starts(height) for x in starts(width)]


def sliced_predict(model: Any, image: np.ndarray, *, imgsz: int = 640, slice: int = 640, overlap: float = 0.2,
                   conf: float = 0.25, iou: float = 0.7, max_det: int = 300, include_full: bool = True,
                   speed: dict[str, float] | None = None) -> torch.Tensor:
    """Detect on overlapping tiles (plus the whole image if ``include_full``) and merge with class-wise NMS.

    ``model`` is a DetectionModel in eval mode (used as is) or anything ``as_inference_model`` accepts;
    ``image`` is RGB uint8 (H, W, 3). Returns (n, 6) x1 y1 x2 y2 conf cls in original-image pixels.
    """
    model = as_inference_model(model, fuse=False)
    windows = slice_windows(*image.shape[:2], slice, overlap)
    dets = []
    for i in range(0, len(windows), SLICE_BATCH):
        chunk = windows[i:i + SLICE_BATCH]
        crops = [image[y1:y2, x1:x2] for x1, y1, x2, y2 in chunk]
        for det, (x1, y1, _, _) in zip(detect(model, crops, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det,
                                              speed=speed), chunk):
            det[:, :4] += det.new_tensor([x1, y1, x1, y1])
            dets.append(det)
    if include_full:
        dets += detect(model, [image], imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, speed=speed)
    return merge_detections(torch.cat(dets), iou, max_det)


def merge_detections(dets: torch.Tensor, iou: float, max_det: int) -> torch.Tensor:
    """Class-wise NMS over (n, 6) detections gathered from several views; best ``max_det`` kept."""
    from torchvision.ops import batched_nms  # imported when used: it loads torch._dynamo (~1 s)

    keep = batched_nms(dets[:, :4], dets[:, 4], dets[:, 5].long(), iou)[:max_det]
    return dets[keep]


# --- sources


@dataclass
class Frame:
    """One image to predict on: a file, an array, or a video frame (``index`` and ``fps`` set)."""

    path: str
    image: np.ndarray
    index: int | None = None
    fps: float | None = None


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _is_media(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMG_SUFFIXES + VIDEO_SUFFIXES


def expand_source(source: Any) -> list[Path | np.ndarray]:
    """Image/video files from a path, folder, glob, ``.txt`` list, array, or a list of those."""
    if isinstance(source, np.ndarray):
        return [source]
    if isinstance(source, (list, tuple)):
        return [item for s in source for item in expand_source(s)]
    if source is None or str(source) == "":
        raise UserError("no source given: pass source=<image|folder|glob|video|list.txt>")
    text, path = str(source), Path(str(source))
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_media(p))
        if not files:
            raise FileNotFoundError(f"no images or videos in folder {path}")
        return files
    if not path.exists() and any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if _is_media(p))
        if not files:
            raise FileNotFoundError(f"no images or videos match {text}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"source not found: {text}")
    if path.suffix.lower() == ".txt":
        files = read_list_file(path, must_exist=True)
        if not files:
            raise FileNotFoundError(f"{path} lists no files")
        return files
    if not _is_media(path):
        raise UserError(f"unsupported source {text}: give an image ({', '.join(IMG_SUFFIXES)}), a video "
                         f"({', '.join(VIDEO_SUFFIXES)}), a folder, a glob or a .txt list")
    return [path]


def iter_frames(items: list[Path | np.ndarray]) -> Iterator[Frame]:
    """Decode the expanded source lazily: images once, videos frame by frame (RGB).

    A source of several files skips an unreadable image or video with a warning and counts the skips in a closing
    line; a single file that cannot be read is an error.
    """
    skipped: list[str] = []
    for n, item in enumerate(items):
        if isinstance(item, np.ndarray):
            if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
                raise UserError(f"array source {n}: expected an RGB uint8 (H, W, 3) image, "
                                 f"got {item.dtype} {item.shape}")
            yield Frame(f"array{n}.jpg", item)
            continue
        try:
            yield from _video_frames(item) if is_video_file(item) else [Frame(str(item), load_image(item))]
        except (UserError, FileNotFoundError) as e:
            if len(items) == 1:
                raise
            skipped.append(str(item))
            print(f"warning: skipped {e}")
    if skipped:
        print(f"warning: skipped {len(skipped)} of {len(items)} source files that could not be read: "
              + ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))


def _video_frames(path: Path) -> Iterator[Frame]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UserError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield Frame(str(path), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), index, fps)
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise UserError(f"video {path} has no readable frames")


# --- prediction


def predict(model: Any, source: Any, *, imgsz: int = 640, conf: float = 0.25, iou: float = 0.7,
            max_det: int = 300, slice: int | None = None, overlap: float = 0.2, slice_full: bool = True,
            device: str | torch.device | None = None, half: bool = False, save_dir: str | Path | None = None,
            save: bool = False, save_txt: bool = False, save_json: bool = False, stream: bool = False,
            verbose: bool = False, compile: bool = False) -> list[Results] | Iterator[Results]:
    """Detect objects in every image / video frame of ``source``; a list of Results (a generator if ``stream``).

    With ``save_dir``: ``save`` writes annotated images (and annotated videos, mp4v), ``save_txt``
    YOLO lines ``cls cx cy w h conf`` to ``labels/``, ``save_json`` COCO records to ``predictions.json``.
    """
    if (save or save_txt or save_json) and save_dir is None:
        raise ValueError("save, save_txt and save_json need a save_dir")
    runner = as_inference_model(model, device, half, compile=compile)
    if input_size(runner, imgsz) != imgsz:
        print(f"note: {runner.file.name} has a fixed input size {runner.input_shape[0]}; using it, not imgsz={imgsz}")
    items = expand_source(source)
    writer = ResultWriter(Path(save_dir), save, save_txt, save_json) if save_dir is not None else None

    def run_one(frame: Frame) -> tuple[torch.Tensor, dict[str, float]]:
        speed: dict[str, float] = {}
        if slice:
            det = sliced_predict(runner, frame.image, imgsz=imgsz, slice=int(slice), overlap=overlap, conf=conf,
                                 iou=iou, max_det=max_det, include_full=slice_full, speed=speed)
        else:
            det = detect(runner, [frame.image], imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, speed=speed)[0]
        return det, speed

    gen = _stream(items, runner.names, run_one, writer, verbose)
    return gen if stream else list(gen)


def _stream(items: list, names: dict[int, str], run_one: Callable, writer: "ResultWriter | None",
            verbose: bool) -> Iterator[Results]:
    try:
        for n, frame in enumerate(iter_frames(items)):
            det, speed = run_one(frame)
            result = Results(frame.image, frame.path, names, det, speed, frame.index)
            if writer is not None:
                writer.add(result, n, frame.fps)
            if verbose:
                where = f"{frame.path}" + (f" frame {frame.index}" if frame.index is not None else "")
                print(f"{where}: {result.summary_line()} ({sum(speed.values()):.1f} ms)")
            yield result
    finally:
        if writer is not None:
            writer.close()


class ResultWriter:
    """Writes annotated images / videos, YOLO txt files and one COCO json for a prediction run.

    COCO image ids: the ids ``metrics.coco_image_ids`` gives the run's images (so a folder's predictions match the
    ground truth yololab builds or writes for it); a video frame's id is its 1-based position in the run.
    """

    def __init__(self, save_dir: Path, save: bool, save_txt: bool, save_json: bool):
        self.save_dir, self.save, self.save_txt, self.save_json = save_dir, save, save_txt, save_json
        self.records: list[tuple[str | None, dict]] = []  # (image file, or None for a video frame; record)
        self.images: dict[str, None] = {}  # every image file of the run, also those without detections
        self.videos: dict[str, cv2.VideoWriter] = {}
        save_dir.mkdir(parents=True, exist_ok=True)

    def add(self, result: Results, position: int, fps: float | None) -> None:
        """Write what is asked for one result; ``position`` is its 0-based index in the run."""
        stem = Path(result.path).stem
        if self.save and result.frame is None:
            suffix = Path(result.path).suffix.lower()
            result.save(self.save_dir / (stem + (suffix if suffix in IMG_SUFFIXES else ".jpg")))
        elif self.save:
            self._video_writer(result, fps).write(cv2.cvtColor(result.plot(), cv2.COLOR_RGB2BGR))
        if self.save_txt:
            name = stem if result.frame is None else f"{stem}_{result.frame}"
            result.save_txt(self.save_dir / "labels" / f"{name}.txt")
        if self.save_json:
            still = result.frame is None
            if still:
                self.images[result.path] = None
            self.records += [(result.path if still else None, r) for r in result.coco_records(position + 1)]

    def _video_writer(self, result: Results, fps: float | None) -> cv2.VideoWriter:
        if result.path not in self.videos:
            h, w = result.orig_shape
            file = self.save_dir / f"{Path(result.path).stem}.mp4"
            self.videos[result.path] = cv2.VideoWriter(str(file), cv2.VideoWriter_fourcc(*"mp4v"), fps or 30.0, (w, h))
        return self.videos[result.path]

    def close(self) -> None:
        for video in self.videos.values():
            video.release()
        self.videos.clear()
        if self.save_json:
            ids = coco_image_ids(self.images)
            write_json(self.save_dir / "predictions.json",
                       [{**r, "image_id": ids[path]} if path is not None else r for path, r in self.records])
