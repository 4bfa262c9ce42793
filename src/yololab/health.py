"""Run health: per-epoch signals that tell an implementation defect from a module's verdict.

A run is unhealthy when its numbers cannot be read as what the architecture does: non-finite gradients,
BatchNorm statistics that no longer describe the activations, an EMA copy that disagrees with the weights it
averages, or a validation score that collapses for an epoch while training goes on smoothly. The functions
here are cheap (a handful of images, no second validation) and depend on nothing above the core layer.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .utils.files import write_json

# Validation-collapse rule, chosen from the 18 recorded BCCD ablation runs (docs/modules/spconv.md, "Training
# health"; tests/test_health.py checks it against every committed results.csv):
COLLAPSE_DROP = 0.5  # mAP50-95 below this fraction of the best earlier epoch
COLLAPSE_MIN_PEAK = 0.05  # ... whose best earlier epoch is above noise level
COLLAPSE_SKIP_EPOCHS = 3  # ... after the first epochs (warm-up: scores near zero, statistics settling)
COLLAPSE_LOSS_RISE = 0.10  # ... while the training loss rose by at most this fraction over the previous epoch
HEALTH_IMAGES = 8  # validation images the per-epoch checks run on
MAP_COLUMN = "metrics/mAP50-95"


@dataclass(frozen=True)
class CollapseEvent:
    """Consecutive epochs (1-based, as in results.csv) whose validation score collapsed."""

    epoch: int  # first collapsed epoch
    last_epoch: int  # last consecutive collapsed epoch
    peak: float  # best score of the epochs before ``epoch``
    low: float  # lowest score during the event
    loss_ratio: float  # training loss of ``epoch`` over that of the epoch before

    def describe(self) -> str:
        epochs = f"epoch {self.epoch}" if self.epoch == self.last_epoch else f"epochs {self.epoch}-{self.last_epoch}"
        return f"{epochs}: mAP50-95 {self.low:.3f} after a best of {self.peak:.3f}"


def collapse_events(rows: Iterable[Mapping[str, object]], *, drop: float = COLLAPSE_DROP,
                    min_peak: float = COLLAPSE_MIN_PEAK, skip_epochs: int = COLLAPSE_SKIP_EPOCHS,
                    loss_rise: float = COLLAPSE_LOSS_RISE) -> list[CollapseEvent]:
    """Validation collapses in a run's results.csv rows (dicts as ``csv.DictReader`` gives them, values as text
    or numbers), in epoch order.

    Epoch ``e`` collapses when ``e > skip_epochs``, the best mAP50-95 of the earlier epochs is at least
    ``min_peak``, the score of ``e`` is below ``drop`` times that best, and the summed training loss of ``e`` is
    at most ``1 + loss_rise`` times that of ``e - 1``. Consecutive collapsed epochs form one event. Rows
    without a validation score (``val=false``) are ignored; the training loss is the sum of the ``train/*_loss``
    columns (box/cls/dfl, or box/cls/obj for anchor-based heads); a row missing a column raises ``KeyError``.
    """
    events: list[CollapseEvent] = []
    best, previous_loss, previous_epoch = 0.0, None, None
    losses: list[str] = []  # the loss columns of the table, from its first scored row
    for row in rows:
        if row.get(MAP_COLUMN) in (None, ""):
            continue
        epoch, score = int(row["epoch"]), float(row[MAP_COLUMN])
        losses = losses or [c for c in row if c.startswith("train/") and c.endswith("_loss")]
        loss = sum(float(row[c]) for c in losses)
        ratio = loss / previous_loss if previous_loss else 1.0
        if epoch > skip_epochs and best >= min_peak and score < drop * best and ratio <= 1.0 + loss_rise:
            last = events[-1] if events else None
            if last is not None and last.last_epoch == previous_epoch:
                events[-1] = CollapseEvent(last.epoch, epoch, last.peak, min(last.low, score), last.loss_ratio)
            else:
                events.append(CollapseEvent(epoch, epoch, best, score, ratio))
        best, previous_loss, previous_epoch = max(best, score), loss, epoch
    return events


def nonfinite_gradients(model: nn.Module) -> int:
    """Number of parameters whose gradient holds a NaN or an infinity."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0
    return int((~torch.stack(torch._foreach_norm(grads)).isfinite()).sum())


def batchnorms(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """(name, module) of every BatchNorm that keeps running statistics."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def batchnorm_variance_range(model: nn.Module) -> tuple[float, float] | None:
    """Smallest and largest running variance over every BatchNorm channel of the model (None without BatchNorm)."""
    variances = [m.running_var for _, m in batchnorms(model)]
    if not variances:
        return None
    flat = torch.cat([v.detach().float().flatten() for v in variances])
    return float(flat.min()), float(flat.max())


@torch.no_grad()
def batchnorm_drift(model: nn.Module, images: torch.Tensor) -> tuple[float, str] | None:
    """How far the running statistics are from the activations they normalize, and the worst BatchNorm's name.

    Runs ``images`` through the model in eval mode and, for every BatchNorm channel, takes the mean square of its
    normalized input ``(x - running_mean) / sqrt(running_var + eps)``: about 1 when the statistics describe the
    activations, far above 1 when they are stale (an eval-mode output the training never saw). Returns the largest
    value over all channels and the name of its BatchNorm, which may sit downstream of where the statistics went
    stale (None without BatchNorm). The model's mode is restored.
    """
    norms = batchnorms(model)
    if not norms:
        return None
    worst: dict[str, float] = {}

    def record(name: str):
        def hook(module: _BatchNorm, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0].detach().float().transpose(0, 1).flatten(1)  # (C, N*H*W)
            z = (x - module.running_mean.float()[:, None]) ** 2 / (module.running_var.float()[:, None] + module.eps)
            worst[name] = max(worst.get(name, 0.0), float(z.mean(1).max()))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in norms]
    was_training = model.training
    try:
        model.eval()(images)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    name = max(worst, key=worst.get)
    return worst[name], name


@torch.no_grad()
def ema_disagreement(model: nn.Module, ema: nn.Module, images: torch.Tensor) -> float:
    """Largest difference of any class score (0-1) between the trained model and its EMA copy, both in eval mode,
    on ``images`` (detector outputs ``(batch, 4 + nc, anchors)``). The trained model's mode is restored."""
    was_training = model.training
    try:
        raw = model.eval()(images)
    finally:
        model.train(was_training)
    return float((raw[:, 4:].float() - ema.eval()(images)[:, 4:].float()).abs().max())


def read_results(path: str | Path) -> list[dict[str, str]]:
    """The rows of a results.csv ([] when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class RunHealth:
    """Per-epoch health of a training run, kept in ``health.json`` next to its results.csv.

    The trainer calls ``check_gradients`` before each optimizer step and ``end_epoch`` after writing each epoch's
    results.csv row; ``images`` are a few validation images (see ``sample_images``). Resuming at ``start_epoch``
    drops the records of later epochs. ``images`` is a uint8 batch.
    """

    def __init__(self, save_dir: str | Path, images: torch.Tensor, start_epoch: int = 0):
        self.save_dir, self.images = Path(save_dir), images
        self.file = self.save_dir / "health.json"
        self.epochs: list[dict[str, Any]] = []
        if start_epoch and self.file.is_file():
            self.epochs = [e for e in json.loads(self.file.read_text())["epochs"] if e["epoch"] <= start_epoch]
        self.nonfinite_grad_steps = 0

    def check_gradients(self, model: nn.Module) -> None:
        """Count an optimizer step whose gradients are not all finite (under float16 AMP the scaler skips such
        steps by design, so a few are expected there)."""
        self.nonfinite_grad_steps += nonfinite_gradients(model) > 0

    def end_epoch(self, epoch: int, model: nn.Module, ema: nn.Module | None) -> list[str]:
        """Record the epoch's signals, rewrite health.json; returns warnings for the log (a collapse that starts at
        this epoch, non-finite gradients)."""
        images = self.images.to(next(model.parameters()).device).float() / 255
        variance = batchnorm_variance_range(model) or (None, None)
        drift = batchnorm_drift(ema if ema is not None else model, images) or (None, None)
        record = {"epoch": epoch, "nonfinite_grad_steps": self.nonfinite_grad_steps,
                  "bn_var_min": variance[0], "bn_var_max": variance[1], "bn_drift": drift[0],
                  "bn_drift_layer": drift[1],
                  "ema_score_gap": None if ema is None else ema_disagreement(model, ema, images)}
        self.nonfinite_grad_steps = 0
        self.epochs = [e for e in self.epochs if e["epoch"] < epoch] + [record]
        events = collapse_events(read_results(self.save_dir / "results.csv"))
        write_json(self.file, {"epochs": self.epochs, "collapses": [asdict(e) for e in events],
                               "rule": collapse_rule()}, indent=1)
        warnings = [f"health: validation collapse at {e.describe()} (training loss {e.loss_ratio - 1:+.1%} on the "
                    "epoch before): check BatchNorm statistics and EMA in health.json"
                    for e in events if e.epoch == epoch]
        if record["nonfinite_grad_steps"]:
            warnings.append(f"health: {record['nonfinite_grad_steps']} optimizer steps had non-finite gradients")
        return warnings


def collapse_rule() -> dict[str, float]:
    """The thresholds ``collapse_events`` uses by default."""
    return {"drop": COLLAPSE_DROP, "min_peak": COLLAPSE_MIN_PEAK, "skip_epochs": COLLAPSE_SKIP_EPOCHS,
            "loss_rise": COLLAPSE_LOSS_RISE}


def sample_images(dataset: Any, n: int = HEALTH_IMAGES) -> torch.Tensor:
    """Up to the first ``n`` images of a non-augmented YoloDataset as one uint8 batch (no loader needed); a rect
    dataset gives those of its first shape."""
    items: list[torch.Tensor] = []
    for i in range(min(n, len(dataset))):
        image = dataset[i]["img"]
        if items and image.shape != items[0].shape:
            break
        items.append(image)
    return torch.stack(items)
