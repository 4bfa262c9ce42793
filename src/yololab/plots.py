"""Plots saved in run folders: small functions, each writing one image file.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot, so no GUI backend and no global state); text uses
matplotlib's bundled DejaVu font, nothing is downloaded. The class colours here are also the box colours of
``yololab.engine.results.Results.plot``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure

MAX_LEGEND = 20  # above this many classes the per-class curves are drawn without a legend

# Tableau-20 colours (RGB): distinct hues, dark and light variants interleaved.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
)


def class_colour(cls: int) -> tuple[int, int, int]:
    """RGB colour of a class index (cycles through PALETTE)."""
    return PALETTE[int(cls) % len(PALETTE)]


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (relative luminance)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def save_figure(fig: Figure, file: str | Path) -> Path:
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=150)
    return file


def plot_pr_curves(recall: np.ndarray, precision: np.ndarray, names: Sequence[str], ap50: Sequence[float | None],
                   map50: float, file: str | Path) -> Path:
    """Precision-recall curve per class (``precision`` (K, R) over ``recall`` (R,); rows of -1 are skipped)."""
    fig = Figure(figsize=(9, 6), layout="tight")
    ax = fig.add_subplot()
    valid = [k for k in range(len(names)) if (precision[k] >= 0).all()]
    for k in valid:
        label = f"{names[k]} {ap50[k]:.3f}" if len(names) <= MAX_LEGEND else None
        ax.plot(recall, precision[k], linewidth=1, color=np.array(class_colour(k)) / 255, label=label)
    if valid:
        ax.plot(recall, precision[valid].mean(0), linewidth=3, color="blue", label=f"all classes {map50:.3f} AP50")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title="Precision-Recall (IoU 0.5)")
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, file)


def plot_confidence_curve(conf: np.ndarray, values: np.ndarray, names: Sequence[str], file: str | Path,
                          ylabel: str = "F1", valid: np.ndarray | None = None) -> Path:
    """A metric against confidence per class (``values`` (K, C)) plus the class mean and its best point."""
    fig = Figure(figsize=(9, 6), layout="tight")
    ax = fig.add_subplot()
    valid = np.ones(len(names), bool) if valid is None else valid
    for k in np.flatnonzero(valid):
        label = names[k] if len(names) <= MAX_LEGEND else None
        ax.plot(conf, values[k], linewidth=1, color=np.array(class_colour(k)) / 255, label=label)
    if valid.any():
        mean = values[valid].mean(0)
        best = int(mean.argmax())
        ax.plot(conf, mean, linewidth=3, color="blue", label=f"all classes {mean[best]:.2f} at {conf[best]:.3f}")
    ax.set(xlabel="Confidence", ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.01), title=f"{ylabel}-Confidence")
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, file)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], file: str | Path, normalize: bool = True) -> Path:
    """Confusion matrix (rows predicted, columns true, last row/column background), columns normalized to 1."""
    labels = [*names, "background"]
    values = matrix / np.maximum(matrix.sum(0, keepdims=True), 1) if normalize else matrix
    n = len(labels)
    size = min(4 + 0.45 * n, 24)
    fig = Figure(figsize=(size, size * 0.85), layout="tight")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        for (i, j), v in np.ndenumerate(values):
            if v:
                ax.text(j, i, f"{v:.2f}" if normalize else str(int(v)), ha="center", va="center", fontsize=7,
                        color="white" if v > 0.5 * values.max() else "black")
    ax.set(xlabel="True", ylabel="Predicted", title=f"Confusion matrix{' (normalized)' if normalize else ''}")
    return save_figure(fig, file)


def save_image_grid(rows: Sequence[Sequence[np.ndarray]], file: str | Path, gap: int = 4) -> Path:
    """Write RGB images arranged in rows (e.g. [ground truth, prediction] per image) as one JPEG."""
    cell_h = max(im.shape[0] for row in rows for im in row)
    cell_w = max(im.shape[1] for row in rows for im in row)
    ncols = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (cell_h + gap) - gap, ncols * (cell_w + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            y, x = r * (cell_h + gap), c * (cell_w + gap)
            canvas[y:y + im.shape[0], x:x + im.shape[1]] = im
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(file), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {file}")
    return file


def plot_training_curves(csv_file: str | Path, columns: Sequence[str], file: str | Path) -> Path | None:
    """One small panel per results.csv column (losses, learning rates, metrics) against the epoch."""
    import csv
    import math

    with open(csv_file, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in columns if any(r.get(c, "") != "" for r in rows)]
    if not rows or not columns:
        return None
    epochs = [int(r["epoch"]) for r in rows]
    ncols = 4
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(12, 2.4 * nrows), tight_layout=True)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, col in zip(axes.flat, columns):
        ax.plot(epochs, [float(r[col]) if r[col] != "" else float("nan") for r in rows], marker=".", linewidth=1.5)
        ax.set_title(col, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    return save_figure(fig, file)
