"""Run health: per-epoch signals that tell an implementation defect from a module's verdict.

A run is unhealthy when its numbers cannot be read as what the architecture does: non-finite gradients,
BatchNorm statistics that no longer describe the activations, an EMA copy that disagrees with the weights it
averages, or a validation score that collapses for an epoch while training goes on smoothly. The functions
here are cheap (a handful of images, no second validation) and depend on nothing above the core layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# Validation-collapse rule, chosen from the 18 recorded BCCD ablation runs (docs/modules/spconv.md, "Training
# health"; tests/test_health.py checks it against every committed results.csv):
COLLAPSE_DROP = 0.5  # mAP50-95 below this fraction of the best earlier epoch
COLLAPSE_MIN_PEAK = 0.05  # ... whose best earlier epoch is above noise level
COLLAPSE_SKIP_EPOCHS = 3  # ... after the first epochs (warm-up: scores near zero, statistics settling)
COLLAPSE_LOSS_RISE = 0.10  # ... while the training loss rose by at most this fraction over the previous epoch
LOSS_COLUMNS = ("train/box_loss", "train/cls_loss", "train/dfl_loss")
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
    without a validation score (``val=false``) are ignored; a row with a missing column raises ``KeyError``.
    """
    events: list[CollapseEvent] = []
    best, previous_loss, previous_epoch = 0.0, None, None
    for row in rows:
        if row.get(MAP_COLUMN) in (None, ""):
            continue
        epoch, score = int(row["epoch"]), float(row[MAP_COLUMN])
        loss = sum(float(row[c]) for c in LOSS_COLUMNS)
        ratio = loss / previous_loss if previous_loss else 1.0
        if epoch > skip_epochs and best >= min_peak and score < drop * best and ratio <= 1.0 + loss_rise:
            last = events[-1] if events else None
            if last is not None and last.last_epoch == previous_epoch:
                events[-1] = CollapseEvent(last.epoch, epoch, last.peak, min(last.low, score), last.loss_ratio)
            else:
                events.append(CollapseEvent(epoch, epoch, best, score, ratio))
        best, previous_loss, previous_epoch = max(best, score), loss, epoch
    return events
