"""YoloDataset (verified labels, letterbox or training augmentations) and a deterministic DataLoader."""

from __future__ import annotations

import logging
import math
import os
import random
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from ..cfg import defaults
from ..errors import UserError
from .augment import (
    augment_hsv,
    flip_horizontal,
    flip_vertical,
    letterbox,
    mixup,
    mosaic4,
    random_affine,
    resize_long_side,
)
from .boxes import scale_boxes, xywh_to_xyxy, xyxy_to_xywh
from .image import load_image
from .labels import load_labels

LOGGER = logging.getLogger(__name__)

HYP_KEYS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud", "fliplr",
            "mosaic", "mixup")
DEFAULT_HYP: dict[str, float] = {k: float(defaults()[k]) for k in HYP_KEYS}  # default.yaml's augmentation values
RAM_CACHE_SHARE = 0.5  # cache=ram is refused when the images need more than this share of free memory
RECENT_BYTES = 160 * 2**20  # decoded images kept per worker when augmenting; mosaic and mixup partners come from them


class YoloDataset(Dataset):
    """Images with YOLO txt labels, verified once (label cache); usable images only.

    ``augment=False`` letterboxes (with ``rect=True`` each batch of ``batch_size`` shares one
    stride-multiple shape; images are then ordered by aspect ratio). ``augment=True`` applies mosaic,
    random affine, mixup, HSV and flips with ``hyp`` (keys of ``DEFAULT_HYP``; other keys are ignored
    so a trainer may pass its whole settings dict). ``cache="ram"`` keeps resized images in memory.
    """

    def __init__(self, img_files: Iterable[str | Path], *, imgsz: int = 640, augment: bool = False,
                 hyp: dict[str, Any] | None = None, rect: bool = False, batch_size: int = 16, stride: int = 32,
                 cache: str | bool | None = None, nc: int | None = None, pad: float = 0.5):
        if rect and augment:
            raise UserError("rect=True is for validation: mosaic and affine augmentation need square images")
        if cache not in (None, False, True, "ram"):
            raise UserError(f"cache must be 'ram' or empty, got {cache!r}")
        img_files = list(img_files)
        self.labels, self.report = load_labels(img_files, nc)
        if not self.labels:
            where = Path(img_files[0]).parent if img_files else "an empty file list"
            raise UserError(f"no usable image among {len(img_files)} files ({where})"
                             + (f"; problems:\n{self.report.summary()}" if self.report else ""))
        if self.report:
            LOGGER.warning("%d of %d images usable; data problems (listed by `yololab check-data`):\n%s",
                           len(self.labels), len(img_files), self.report.summary())
        self.imgsz, self.augment, self.rect, self.stride = int(imgsz), bool(augment), bool(rect), int(stride)
        self.batch_size = int(batch_size)
        hyp = hyp or {}
        self.hyp = {k: float(default if hyp.get(k) is None else hyp[k]) for k, default in DEFAULT_HYP.items()}
        # mosaic and mixup probabilities live in shared memory so close_mosaic() reaches persistent workers
        self._mix_probs = torch.tensor([self.hyp["mosaic"], self.hyp["mixup"]], dtype=torch.float64).share_memory_()
        self.rng = np.random.default_rng(0)  # reseeded per worker by build_dataloader
        self.batch_shapes = self._rect_shapes(pad) if self.rect else None
        self._recent: OrderedDict[int, tuple[np.ndarray, tuple[int, int]]] = OrderedDict()
        self._recent_max = int(np.clip(RECENT_BYTES // (3 * self.imgsz ** 2), 16, 1000))
        self._ram = None
        if cache:
            self._ram = self._cache_in_ram()

    def __len__(self) -> int:
        return len(self.labels)

    def close_mosaic(self) -> None:
        """Turn mosaic and mixup off (the last ``close_mosaic`` epochs), also in running workers."""
        self._mix_probs.zero_()

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = self.labels[index]
        if self.augment:
            img, cls, boxes, ori_shape, ratio_pad = self._augmented(index)
        else:
            img, cls, boxes, ori_shape, ratio_pad = self._letterboxed(index)
        h, w = img.shape[:2]
        bboxes = scale_boxes(xyxy_to_xywh(boxes), 1 / w, 1 / h)
        return {
            "img": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "cls": torch.from_numpy(cls.reshape(-1, 1).astype(np.float32)),
            "bboxes": torch.from_numpy(bboxes),
            "im_file": label["im_file"],
            "ori_shape": ori_shape,
            "ratio_pad": ratio_pad,
        }

    @staticmethod
    def collate_fn(batch: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack images; concatenate boxes with ``batch_idx`` giving each box's image."""
        shapes = {tuple(b["img"].shape) for b in batch}
        if len(shapes) > 1:
            raise ValueError(f"images of one batch differ in shape: {sorted(shapes)}")
        return {
            "img": torch.stack([b["img"] for b in batch]),
            "cls": torch.cat([b["cls"] for b in batch]),
            "bboxes": torch.cat([b["bboxes"] for b in batch]),
            "batch_idx": torch.cat([torch.full((len(b["cls"]),), float(i)) for i, b in enumerate(batch)]),
            "im_file": [b["im_file"] for b in batch],
            "ori_shape": [b["ori_shape"] for b in batch],
            "ratio_pad": [b["ratio_pad"] for b in batch],
        }

    # --- loading
    def _load_resized(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """Image ``index`` resized so its long side is ``imgsz``, and its original (h, w)."""
        if self._ram is not None:
            return self._ram[index]
        if index in self._recent:
            return self._recent[index]
        item = self._decode_resized(index)
        if self.augment:
            self._recent[index] = item
            if len(self._recent) > self._recent_max:
                self._recent.popitem(last=False)
        return item

    def _decode_resized(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        img = load_image(self.labels[index]["im_file"])
        return resize_long_side(img, self.imgsz, smooth_downscale=not self.augment), img.shape[:2]

    def _partners(self, k: int) -> list[int]:
        """``k`` random images to combine with (mosaic, mixup): drawn among the recently decoded ones once
        enough are kept, which spares most decoding (the sampler's shuffle makes them a random subset)."""
        pool = list(self._recent) if self._ram is None and len(self._recent) >= self._recent_max // 2 else len(self)
        return [int(i) for i in self.rng.choice(pool, size=k)]

    def _resized_sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(img, cls, xyxy pixel boxes)`` of the resized image."""
        img, _ = self._load_resized(index)
        label = self.labels[index]
        boxes = scale_boxes(xywh_to_xyxy(label["bboxes"]), img.shape[1], img.shape[0])
        return img, label["cls"].reshape(-1), boxes

    def _letterboxed(self, index: int):
        """Letterbox to ``imgsz`` (or the batch's rect shape); ratio_pad maps original pixels exactly."""
        resized, ori_shape = self._load_resized(index)
        label = self.labels[index]
        shape = tuple(int(v) for v in self.batch_shapes[index // self.batch_size]) if self.rect else self.imgsz
        img, (gain_h, gain_w), (pad_w, pad_h) = letterbox(resized, shape, scaleup=False, stride=self.stride)
        content_h, content_w = gain_h * resized.shape[0], gain_w * resized.shape[1]
        boxes = scale_boxes(xywh_to_xyxy(label["bboxes"]), content_w, content_h) + np.float32([pad_w, pad_h] * 2)
        ratio_pad = ((content_h / ori_shape[0], content_w / ori_shape[1]), (pad_w, pad_h))
        return img, label["cls"].reshape(-1), boxes, ori_shape, ratio_pad

    def _augmented(self, index: int):
        """Training sample: mosaic or letterbox, random affine, mixup, HSV, flips.

        ``ratio_pad`` here only gives the resize gain (no exact mapping exists after mosaic/affine).
        """
        img, cls, boxes = self._mosaic_or_single(index)
        if self.rng.random() < float(self._mix_probs[1]):
            img, cls, boxes = mixup((img, cls, boxes), self._mosaic_or_single(self._partners(1)[0]), self.rng)
        hyp = self.hyp
        img = augment_hsv(img, self.rng, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"])
        if self.rng.random() < hyp["flipud"]:
            img, boxes = flip_vertical(img, boxes)
        if self.rng.random() < hyp["fliplr"]:
            img, boxes = flip_horizontal(img, boxes)
        h0, w0 = self.labels[index]["shape"]
        gain = self.imgsz / max(h0, w0)
        return img, cls, boxes, (h0, w0), ((gain, gain), (0, 0))

    def _mosaic_or_single(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mosaic of ``index`` and three random images (probability ``mosaic``) or the letterboxed image,
        then the random affine, giving an ``imgsz`` square."""
        s, hyp = self.imgsz, self.hyp
        if self.rng.random() < float(self._mix_probs[0]):
            tiles = [self._resized_sample(i) for i in (index, *self._partners(3))]
            img, cls, boxes = mosaic4(tiles, s, self.rng)
        else:
            img, cls, boxes = self._resized_sample(index)
            img, (gain_h, gain_w), (pad_w, pad_h) = letterbox(img, s, scaleup=False)
            boxes = boxes * np.float32([gain_w, gain_h] * 2) + np.float32([pad_w, pad_h] * 2)
        return random_affine(img, cls, boxes, (s, s), self.rng, degrees=hyp["degrees"], translate=hyp["translate"],
                             scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"])

    # --- set-up
    def _rect_shapes(self, pad: float) -> np.ndarray:
        """Order images by aspect ratio and give each batch the smallest stride-multiple shape fitting all."""
        aspect = np.array([h / w for h, w in (lb["shape"] for lb in self.labels)])
        order = np.argsort(aspect, kind="stable")
        self.labels = [self.labels[i] for i in order]
        aspect = aspect[order]
        shapes = []
        for start in range(0, len(aspect), self.batch_size):
            lo, hi = aspect[start:start + self.batch_size].min(), aspect[start:start + self.batch_size].max()
            rel = (hi, 1.0) if hi < 1 else (1.0, 1 / lo) if lo > 1 else (1.0, 1.0)
            shapes.append(np.ceil(np.array(rel) * self.imgsz / self.stride + pad).astype(int) * self.stride)
        return np.array(shapes)

    def _cache_in_ram(self) -> list[tuple[np.ndarray, tuple[int, int]]] | None:
        """Decode and resize every image once; refused (with a warning) when memory is short."""
        need = sum(3 * math.ceil(h * self.imgsz / max(h, w)) * math.ceil(w * self.imgsz / max(h, w))
                   for h, w in (lb["shape"] for lb in self.labels))
        free = _available_memory()
        if free is not None and need > RAM_CACHE_SHARE * free:
            LOGGER.warning("cache=ram skipped: images need %.1f GB, %.1f GB free", need / 1e9, free / 1e9)
            return None
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            return list(pool.map(self._decode_resized, range(len(self))))


def _available_memory() -> int | None:
    """Free physical memory in bytes (None where the platform does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def build_dataloader(dataset: YoloDataset, batch_size: int, *, workers: int = 2, shuffle: bool = False,
                     seed: int = 0, rank: int = -1) -> DataLoader:
    """A DataLoader whose order and augmentations depend only on ``seed`` (and ``rank``, ``workers``).

    Each worker reseeds the dataset's generator from the loader's seeded generator; ``rank >= 0`` uses a
    DistributedSampler (call ``loader.sampler.set_epoch(epoch)`` each epoch). Workers are persistent
    and capped at the CPU count and the batch size.
    """
    if dataset.rect and (shuffle or batch_size != dataset.batch_size):
        raise ValueError(f"a rect dataset built for batch_size={dataset.batch_size} needs shuffle=False and the "
                         f"same batch size (got shuffle={shuffle}, batch_size={batch_size})")
    workers = max(0, min(int(workers), os.cpu_count() or 1, batch_size))
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed) if rank >= 0 else None
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([seed, rank + 1]).generate_state(1)[0]))
    if workers == 0:
        dataset.rng = np.random.default_rng([seed, rank + 1])
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=YoloDataset.collate_fn, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=_seed_worker if workers else None, generator=generator,
                      persistent_workers=workers > 0)


def _seed_worker(worker_id: int) -> None:
    """Seed the worker's dataset generator (and the global ones) from the loader's per-worker seed."""
    info = get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)
    random.seed(info.seed)
    np.random.seed(info.seed % 2**32)
    cv2.setNumThreads(0)  # workers already run in parallel
