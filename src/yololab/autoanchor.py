"""AutoAnchor: check how well an anchor-based model's priors fit the training boxes and, when the best possible recall
is below 0.98, replace them by k-means on the box sizes refined by a genetic search (kept only if they fit better)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.cluster.vq import kmeans
from torch import nn

from .data.check import BPR_TARGET, anchor_fit, box_sizes_at
from .nn.anchor_head import AnchorDetect, check_anchor_order

MIN_BOX = 2.0  # pixels: boxes smaller on both sides are left out of the k-means


def model_anchors(model: nn.Module) -> torch.Tensor | None:
    """Pixel priors ``(levels, na, 2)`` of an anchor-based model; None for other heads."""
    head = getattr(model, "head", None)
    if not isinstance(head, AnchorDetect):
        return None
    return (head.anchors * head.stride.view(-1, 1, 1)).detach().cpu()


def training_box_sizes(labels: list[dict], imgsz: int, rng: np.random.Generator) -> np.ndarray:
    """Box sizes in pixels at ``imgsz`` (long side), each image scaled by a random 0.9-1.1 as augmentation does."""
    scales = [np.full(len(lb["bboxes"]), s) for lb, s in zip(labels, rng.uniform(0.9, 1.1, len(labels)))]
    wh = box_sizes_at(labels, imgsz)
    return wh * np.concatenate(scales)[:, None] if len(wh) else wh


def anchor_fitness(anchors: np.ndarray, wh: np.ndarray, anchor_t: float) -> float:
    """Mean over boxes of the best anchor's worst-side ratio, counting only ratios within ``anchor_t``."""
    ratio = wh[:, None] / anchors[None]
    best = np.minimum(ratio, 1 / ratio).min(2).max(1)
    return float((best * (best > 1 / anchor_t)).mean())


def kmeans_anchors(wh: np.ndarray, n: int, anchor_t: float = 4.0, generations: int = 1000,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """``n`` priors (n, 2) sorted by area: k-means on whitened box sizes, then a mutation search on the fitness."""
    rng = rng if rng is not None else np.random.default_rng(0)
    wh = wh[(wh >= MIN_BOX).any(1)].astype(np.float64)
    if len(wh) < n:
        raise ValueError(f"AutoAnchor needs at least {n} boxes of {MIN_BOX:g}+ pixels, the training set has {len(wh)}")
    std = wh.std(0).clip(min=1e-6)
    centres, _ = kmeans(wh / std, n, iter=30, rng=rng)
    anchors = centres * std
    if len(anchors) < n:  # duplicate boxes collapse clusters: fill with random boxes
        anchors = np.concatenate((anchors, wh[rng.choice(len(wh), n - len(anchors), replace=False)]))
    best = anchor_fitness(anchors, wh, anchor_t)
    for _ in range(generations):
        factors = np.ones_like(anchors)
        while (factors == 1).all():  # mutate about 90% of the values by a normal factor with sigma 0.1 x a random scale
            mutate = rng.random(anchors.shape) < 0.9
            factors = (mutate * rng.random() * rng.standard_normal(anchors.shape) * 0.1 + 1).clip(0.3, 3.0)
        candidate = (anchors * factors).clip(min=MIN_BOX)
        fitness = anchor_fitness(candidate, wh, anchor_t)
        if fitness > best:
            best, anchors = fitness, candidate
    return anchors[np.argsort(anchors.prod(1))]


def check_anchors(model: nn.Module, labels: list[dict], imgsz: int, anchor_t: float = 4.0, generations: int = 1000,
                  seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run AutoAnchor on an anchor-based model in place; returns what it measured and whether the anchors changed.

    Anchors given as a count (``anchors: 3``) are always computed; given anchors are replaced only when their best
    possible recall (BPR) is below 0.98 and the new ones reach a higher BPR.
    """
    anchors = model_anchors(model)
    if anchors is None:
        return {}
    head = model.head
    rng = np.random.default_rng(seed)
    wh = training_box_sizes(labels, imgsz, rng)
    bpr, per_box = anchor_fit(wh, anchors.view(-1, 2).numpy(), anchor_t)
    result = {"bpr": bpr, "anchors_per_box": per_box, "changed": False, "anchors": anchors.view(head.nl, -1).tolist()}
    text = f"AutoAnchor: {per_box:.2f} anchors per box, best possible recall {bpr:.4f}"
    if head.anchors_given and bpr >= BPR_TARGET:
        log(text + " - the anchors fit the dataset")
        return result
    new = kmeans_anchors(wh, head.nl * head.na, anchor_t, generations, rng)
    new_bpr, new_per_box = anchor_fit(wh, new, anchor_t)
    if new_bpr <= bpr and head.anchors_given:
        log(text + f"; k-means anchors reach {new_bpr:.4f}, no better: the original anchors are kept")
        return result
    stride = head.stride.view(-1, 1, 1)
    head.anchors[:] = torch.tensor(new, dtype=head.anchors.dtype).view(head.nl, head.na, 2).to(stride) / stride
    head.anchors_given = True
    check_anchor_order(head)
    pixels = model_anchors(model).view(head.nl, -1)
    if isinstance(getattr(model, "yaml", None), dict):  # a model rebuilt from its checkpoint's YAML gets them exactly
        model.yaml["anchors"] = pixels.tolist()  # (strides are powers of 2: pixels / stride is the buffer again)
    result.update(bpr=new_bpr, anchors_per_box=new_per_box, changed=True, bpr_before=bpr, anchors=pixels.tolist())
    log(text + f"; new anchors from k-means + evolution: best possible recall {new_bpr:.4f}, {new_per_box:.2f} "
        f"anchors per box; pixels {np.round(new).astype(int).reshape(head.nl, -1).tolist()}")
    return result
