"""Validation: letterboxed batches -> NMS -> boxes in original pixels -> COCO metrics (faster-coco-eval).

``validate`` scores a model on a dataset split (the trainer calls it every epoch with its own dataloader);
``evaluate_files`` scores an external detector's COCO predictions against a COCO ground truth on the same ruler.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.records import coco_image_ids
from ..errors import UserError
from ..metrics import (
    CONF_GRID,
    DetectionMetrics,
    coco_records,
    evaluate_coco,
    format_table,
    load_coco_json,
    yolo_ground_truth,
)
from ..ops import non_max_suppression, unletterbox_boxes, xywh2xyxy
from ..plots import plot_confidence_curve, plot_confusion_matrix, plot_pr_curves, save_image_grid
from ..utils.files import write_json
from ..utils.torch_utils import select_device
from .openvino import OpenVinoModel
from .predictor import EXPORTED_MODELS, InferenceModel, input_size, sliced_predict

PLOT_IMAGES = 4  # validation images drawn with ground truth beside predictions
PLOT_CONF = 0.25  # predictions drawn on those images and counted in the confusion matrix

LOGGER = logging.getLogger(__name__)
_NOTED_JSON: set[str] = set()
Detections = list[tuple[str, torch.Tensor]]  # (im_file, (n, 6) x1 y1 x2 y2 score class in original pixels)


def validate(model: nn.Module | InferenceModel, data: Any, *, imgsz: int = 640, batch: int = 16, conf: float = 0.001,
             iou: float = 0.7, max_det: int = 300, device: str | torch.device | None = "cpu", split: str = "val",
             save_dir: str | Path | None = None, plots: bool = False, save_json: bool = False, workers: int = 2,
             half: bool = False, verbose: bool = True, slice: int | None = None, overlap: float = 0.2,
             slice_full: bool = True, dataloader: torch.utils.data.DataLoader | None = None) -> dict[str, Any]:
    """Evaluate a DetectionModel, or an exported model (``OnnxModel``, ``OpenVinoModel``), on a dataset split and
    return the metrics dict (see ``metrics.evaluate_coco``).

    ``data`` is a DataConfig or a data string (``data.yaml`` path or ``synthetic``); ``dataloader`` a prebuilt
    rect val loader to reuse. ``slice`` (tile side in pixels) switches to sliced inference on the original
    images (tiles overlapping by ``overlap``, plus the whole image if ``slice_full``). Predictions are written
    to ``save_dir/predictions.json`` with ``save_json``; plots (PR and F1 curves, confusion matrix, images) go
    to ``save_dir`` with ``plots``. ``half`` runs the forward under CUDA float16 autocast. The model's
    train/eval mode and device are restored on return. An exported model with a fixed input size sees square
    letterboxed images of that size (as in ``predict``), not rect batches.
    """
    from ..data import DataConfig, YoloDataset, build_dataloader, load_data_config

    data = data if isinstance(data, DataConfig) else load_data_config(data)
    nc = getattr(model, "nc", None)
    if nc is not None and nc != data.nc:
        raise UserError(f"the model predicts {nc} classes but the dataset has {data.nc} ({data.yaml_file})")
    if (plots or save_json) and save_dir is None:
        raise ValueError("plots=True or save_json=True needs a save_dir")
    device = select_device(device)
    exported = isinstance(model, EXPORTED_MODELS)
    if dataloader is None:
        files = data.split(split)
        if not files:
            raise UserError(f"split '{split}' of {data.yaml_file or data.root} has no images")
        if exported:  # a fixed input size: square letterboxed images, as the predictor feeds it
            imgsz, rect, stride = input_size(model, imgsz), model.input_shape is None, model.stride
        else:
            rect, stride = True, int(max(model.stride)) if hasattr(model, "stride") else 32
        if isinstance(model, OpenVinoModel):
            # Loader processes forked beside OpenVINO's thread pool crashed the process (segfault under pytest,
            # after an INT8 quantization in the same process); the images are loaded here instead.
            workers = 0
        dataset = YoloDataset(files, imgsz=imgsz, rect=rect, batch_size=batch, stride=stride, nc=data.nc)
        dataloader = build_dataloader(dataset, batch, workers=workers)
    labels = dataloader.dataset.labels
    gt, image_ids, category_ids = dataset_ground_truth(labels, data, split)

    if not exported:
        was_training, home = model.training, next(model.parameters()).device
        model.eval().to(device)
    keep = PLOT_IMAGES if plots else 0
    try:
        if slice:
            detections, samples, speed = _sliced_detections(model, labels, imgsz=imgsz, slice=int(slice),
                                                            overlap=overlap, full=slice_full, conf=conf, iou=iou,
                                                            max_det=max_det, keep=keep)
        else:
            detections, samples, speed = _batched_detections(model, dataloader, device=device, conf=conf, iou=iou,
                                                             max_det=max_det, half=half, keep=keep)
    finally:
        if not exported:
            model.train(was_training).to(home)

    predictions = [r for im_file, det in detections for r in coco_records(det, image_ids[im_file], category_ids)]
    metrics = evaluate_coco(gt, predictions, confusion_conf=PLOT_CONF)
    if save_json:
        write_json(Path(save_dir) / "predictions.json", predictions)
    if plots:
        save_metric_plots(metrics, save_dir)
        _plot_samples(samples, data.names, Path(save_dir) / "val_images.jpg")
    if verbose:
        print(format_table(metrics))
        sliced = f" (sliced: {slice} px tiles, overlap {overlap})" if slice else ""
        print("speed: " + ", ".join(f"{v:.1f} ms {k}" for k, v in speed.items()) + f" per image{sliced}")
    return {**metrics.summary, "speed_ms": speed}


def evaluate_files(gt: str | Path, pred: str | Path, *, save_dir: str | Path | None = None, plots: bool = False,
                   verbose: bool = True) -> dict[str, Any]:
    """Score an external detector: COCO ground-truth json and COCO results json in, the same metrics out."""
    if plots and save_dir is None:
        raise ValueError("plots=True needs a save_dir")
    metrics = evaluate_coco(load_coco_json(gt), load_coco_json(pred), confusion_conf=PLOT_CONF)
    if plots:
        save_metric_plots(metrics, save_dir)
    if verbose:
        print(format_table(metrics))
    return {**metrics.summary, "speed_ms": None}


def dataset_ground_truth(labels: list[dict], data: Any, split: str = "val"
                         ) -> tuple[dict, dict[str, int], dict[int, int]]:
    """COCO ground truth of a split, with ``{im_file: image_id}`` and ``{class index: category_id}``.

    The dataset's own ``coco_val_json`` is used for the val split when it lists exactly these images (by file
    name) and names every class; otherwise the ground truth is built from the YOLO labels (area = box area).
    """
    if split == "val" and data.coco_val_json is not None:
        gt = load_coco_json(data.coco_val_json)
        id_by_file = {Path(im["file_name"].replace("\\", "/")).name: im["id"] for im in gt.get("images", [])}
        cat_by_name = {str(c["name"]): c["id"] for c in gt.get("categories", [])}
        files = [Path(lb["im_file"]).name for lb in labels]
        if sorted(files) == sorted(id_by_file) and all(n in cat_by_name for n in data.names.values()):
            return (gt, {lb["im_file"]: id_by_file[f] for lb, f in zip(labels, files)},
                    {i: cat_by_name[n] for i, n in data.names.items()})
        if str(data.coco_val_json) not in _NOTED_JSON:  # once, not at every epoch's validation
            _NOTED_JSON.add(str(data.coco_val_json))
            LOGGER.warning("%s does not list exactly the %d usable val images or lacks a class name; using ground "
                           "truth built from the YOLO labels", data.coco_val_json, len(files))
    gt = yolo_ground_truth(labels, data.names)
    return gt, coco_image_ids(lb["im_file"] for lb in labels), {i: i for i in data.names}


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _batched_detections(model: nn.Module, dataloader, *, device: torch.device, conf: float, iou: float,
                        max_det: int, half: bool, keep: int) -> tuple[Detections, list[tuple], dict[str, float]]:
    """Letterboxed batches -> NMS -> detections in original pixels, ``keep`` samples, ms per image per stage.

    Samples are (letterboxed RGB image, gt (n, 6), detections (m, 6)) in letterboxed pixels.
    """
    autocast = torch.autocast("cuda", dtype=torch.float16) if half and device.type == "cuda" else nullcontext()
    if half and device.type != "cuda":
        print("note: half=true needs CUDA; validating in float32")
    detections, samples = [], []
    spent = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    for batch in dataloader:
        t0 = _now(device)
        images = batch["img"].to(device, non_blocking=True).float() / 255
        t1 = _now(device)
        with torch.inference_mode(), autocast:
            output = model(images)
        t2 = _now(device)
        if not isinstance(output, torch.Tensor) or output.dim() != 3:
            raise ValueError("the model's eval forward must return decoded predictions (batch, 4 + nc, anchors)")
        dets = [d.cpu() for d in non_max_suppression(output.float(), conf=conf, iou=iou, max_det=max_det,
                                                           multi_label=True)]
        for i, det in enumerate(dets):
            boxes = unletterbox_boxes(det[:, :4], batch["ratio_pad"][i], batch["ori_shape"][i])
            detections.append((batch["im_file"][i], torch.cat((boxes, det[:, 4:]), 1)))
        t3 = _now(device)
        if len(samples) < keep:
            samples += _letterboxed_samples(batch, dets, keep - len(samples))
        for key, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2)):
            spent[key] += seconds * 1000
    return detections, samples, {k: v / max(len(detections), 1) for k, v in spent.items()}


def _sliced_detections(model: nn.Module, labels: list[dict], *, imgsz: int, slice: int, overlap: float, full: bool,
                       conf: float, iou: float, max_det: int, keep: int
                       ) -> tuple[Detections, list[tuple], dict[str, float]]:
    """Sliced inference (``predictor.sliced_predict``) on each original image; samples in original pixels."""
    from ..data import load_image
    detections, samples = [], []
    spent = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    for label in labels:
        t0 = time.perf_counter()
        image = load_image(label["im_file"])
        spent["preprocess"] += (time.perf_counter() - t0) * 1000
        det = sliced_predict(model, image, imgsz=imgsz, slice=slice, overlap=overlap, conf=conf, iou=iou,
                             max_det=max_det, include_full=full, speed=spent).cpu()
        detections.append((label["im_file"], det))
        if len(samples) < keep:
            h, w = image.shape[:2]
            boxes = xywh2xyxy(torch.as_tensor(label["bboxes"]).view(-1, 4)) * torch.tensor([w, h, w, h])
            samples.append((image, _gt_rows(boxes, torch.as_tensor(label["cls"])), det[det[:, 4] >= PLOT_CONF]))
    return detections, samples, {k: v / max(len(detections), 1) for k, v in spent.items()}


def _gt_rows(boxes: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Ground truth as (n, 6) detection rows (score 1) so ``Results.plot`` can draw it."""
    return torch.cat((boxes.float(), torch.ones(len(boxes), 1), cls.view(-1, 1).float()), 1)


def _letterboxed_samples(batch: dict, detections: list[torch.Tensor], limit: int) -> list[tuple]:
    """(letterboxed RGB image, gt (n, 6), detections (m, 6)) for the first ``limit`` images of a batch."""
    out = []
    for i in range(min(limit, len(detections))):
        image = batch["img"][i].permute(1, 2, 0).numpy()
        h, w = image.shape[:2]
        mine = batch["batch_idx"] == i
        boxes = xywh2xyxy(batch["bboxes"][mine]) * torch.tensor([w, h, w, h])
        det = detections[i]
        out.append((image, _gt_rows(boxes, batch["cls"][mine]), det[det[:, 4] >= PLOT_CONF]))
    return out


def _plot_samples(samples: list[tuple], names: dict[int, str], file: Path) -> None:
    """One JPEG: a row per sample image, ground truth on the left, predictions (score >= PLOT_CONF) on the right."""
    from .results import Results

    rows = [[Results(image, "ground truth", names, gt).plot(conf=False), Results(image, "prediction", names, det).plot()]
            for image, gt, det in samples]
    if rows:
        save_image_grid(rows, file)


def save_metric_plots(metrics: DetectionMetrics, save_dir: str | Path) -> list[Path]:
    """PR curves, F1-confidence curve and normalized confusion matrix of an evaluation, written to ``save_dir``."""
    save_dir = Path(save_dir)
    s = metrics.summary
    has_gt = np.array([s["per_class"][n]["instances"] > 0 for n in metrics.names])
    return [
        plot_pr_curves(metrics.recall_points, metrics.pr_curves, metrics.names,
                       [s["per_class"][n]["ap50"] for n in metrics.names], s["map50"], save_dir / "pr_curve.png"),
        plot_confidence_curve(CONF_GRID, metrics.f1_conf, metrics.names, save_dir / "f1_curve.png", "F1",
                              valid=has_gt),
        plot_confusion_matrix(metrics.confusion, metrics.names, save_dir / "confusion_matrix.png"),
    ]
