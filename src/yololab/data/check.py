"""``yololab check-data``: images and boxes per split and class, COCO size buckets, every problem found;
and the label-distribution plot saved in training runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .config import load_data_config
from .labels import load_labels
from .report import PROBLEM_KINDS, ProblemReport

SMALL_MAX, MEDIUM_MAX = 32, 96  # COCO size buckets: area < 32^2 small, < 96^2 medium, else large
BPR_TARGET = 0.98  # anchors whose best possible recall is lower are recomputed by AutoAnchor before training


def box_sizes_at(labels: list[dict], imgsz: int) -> np.ndarray:
    """``(n, 2)`` widths and heights in pixels of all boxes once their image is resized to ``imgsz`` (long side)."""
    sizes = [lb["bboxes"][:, 2:] * (np.array(lb["shape"][::-1], np.float32) * imgsz / max(lb["shape"]))
             for lb in labels]
    return np.concatenate(sizes) if sizes else np.zeros((0, 2), np.float32)


def size_buckets(wh: np.ndarray) -> dict[str, int]:
    """Counts of small (area < 32^2), medium (< 96^2) and large boxes."""
    area = wh[:, 0] * wh[:, 1]
    small, medium = area < SMALL_MAX ** 2, area < MEDIUM_MAX ** 2
    return {"small": int(small.sum()), "medium": int((medium & ~small).sum()), "large": int((~medium).sum())}


def anchor_fit(wh: np.ndarray, anchors: np.ndarray, anchor_t: float = 4.0) -> tuple[float, float]:
    """How well prior boxes fit box sizes under the wh-ratio rule: (best possible recall, anchors per box).

    A box fits an anchor when neither side differs by more than a factor ``anchor_t``; the best possible recall is
    the fraction of boxes (``wh`` (n, 2), pixels) that fit at least one of ``anchors`` (k, 2), pixels.
    """
    if not len(wh):
        return 0.0, 0.0
    ratio = wh[:, None] / anchors[None]  # (n, k, 2)
    worst_side = np.minimum(ratio, 1 / ratio).min(2)  # (n, k)
    fits = worst_side > 1 / anchor_t
    return float(fits.any(1).mean()), float(fits.sum(1).mean())


def split_statistics(labels: list[dict], names: dict[int, str], imgsz: int) -> dict[str, Any]:
    """Images, boxes, background images, per-class images/boxes and size buckets of one split."""
    cls = [lb["cls"].reshape(-1).astype(int) for lb in labels]
    all_cls = np.concatenate(cls) if cls else np.zeros(0, int)
    per_class = {name: {"images": sum(int((c == i).any()) for c in cls), "boxes": int((all_cls == i).sum())}
                 for i, name in names.items()}
    return {"images": len(labels), "boxes": int(len(all_cls)), "background_images": sum(len(c) == 0 for c in cls),
            "per_class": per_class, "sizes": size_buckets(box_sizes_at(labels, imgsz))}


def unlabelled_split(labels: list[dict], report: ProblemReport) -> str | None:
    """Why a split cannot train or score a detector (no label file at all, e.g. no ``labels/`` folder beside
    ``images/``, or not one box), or None when it has boxes."""
    if any(len(lb["cls"]) for lb in labels):
        return None
    if report.counts.get("missing_label", 0) == len(labels):
        return (f"none of its {len(labels)} images has a label file (is the labels/ folder beside images/ "
                "missing?)")
    return f"its {len(labels)} images have no box at all (every label file is empty or was dropped)"


def check_data(data: str | Path, imgsz: int = 640, anchors: np.ndarray | None = None,
               anchor_t: float = 4.0) -> dict[str, Any]:
    """Statistics and problems of every split of a dataset, as one JSON-able dict.

    ``{"data", "root", "imgsz", "names", "splits": {split: {"files", "images", "boxes", "background_images",
    "per_class", "sizes", "unlabelled"}}, "problems": {split: {"counts", "entries"}}}``; sizes are measured with each
    image resized to ``imgsz`` (long side), as in training. Given a model's ``anchors`` ((k, 2) pixels), each split
    also gets ``"anchor_fit": {"bpr", "anchors_per_box"}`` (see ``anchor_fit``); ``"unlabelled"`` says why a
    split cannot train or score a detector (None when it has boxes).
    """
    cfg = load_data_config(data)
    result: dict[str, Any] = {"data": str(cfg.yaml_file), "root": str(cfg.root), "imgsz": int(imgsz),
                              "names": {str(k): v for k, v in cfg.names.items()}, "splits": {}, "problems": {}}
    for split in ("train", "val", "test"):
        files = cfg.split(split)
        if not files:
            continue
        labels, report = load_labels(files, cfg.nc)
        result["splits"][split] = {"files": len(files), **split_statistics(labels, cfg.names, imgsz),
                                   "unlabelled": unlabelled_split(labels, report)}
        if anchors is not None:
            bpr, per_box = anchor_fit(box_sizes_at(labels, imgsz), np.asarray(anchors, np.float32).reshape(-1, 2),
                                      anchor_t)
            result["splits"][split]["anchor_fit"] = {"bpr": round(bpr, 4), "anchors_per_box": round(per_box, 2)}
        result["problems"][split] = report.to_dict()
    return result


def format_check_report(result: dict[str, Any], max_entries: int = 20) -> str:
    """Human-readable form of ``check_data``'s result; at most ``max_entries`` files listed per problem kind."""
    lines = [f"dataset {result['data']} (sizes at imgsz {result['imgsz']})"]
    for split, st in result["splits"].items():
        sizes = st["sizes"]
        lines.append(f"\n{split}: {st['images']:,} images ({st['files']:,} files, {st['background_images']:,} "
                     f"background), {st['boxes']:,} boxes; small {sizes['small']:,} / medium {sizes['medium']:,} / "
                     f"large {sizes['large']:,}")
        if "anchor_fit" in st:
            fit = st["anchor_fit"]
            low = "" if fit["bpr"] >= BPR_TARGET else f" (below {BPR_TARGET}: AutoAnchor recomputes them before training)"
            lines.append(f"  anchors: best possible recall {fit['bpr']:.4f}, {fit['anchors_per_box']:.2f} anchors per "
                         f"box{low}")
        width = max(len(n) for n in st["per_class"])
        for name, c in st["per_class"].items():
            lines.append(f"  {name:<{width}}  {c['images']:>7,} images  {c['boxes']:>8,} boxes")
        if st["unlabelled"]:
            lines.append(f"  NOT USABLE for training or validation: {st['unlabelled']}")
        problems = result["problems"][split]
        if not problems["counts"] and not st["unlabelled"]:
            lines.append("  no problems found")
        lines += format_problems(problems, max_entries)
    return "\n".join(lines)


def format_problems(problems: dict[str, Any], max_entries: int = 20) -> list[str]:
    """Lines of a ``ProblemReport.to_dict()``: count, kind and action per kind, then at most ``max_entries`` files."""
    lines = []
    for kind, count in problems["counts"].items():
        lines.append(f"  {count:,} {kind}: {PROBLEM_KINDS[kind]}")
        entries = [e for e in problems["entries"] if e["kind"] == kind]
        lines += [f"      {e['file']}: {e['message']}" for e in entries[:max_entries]]
        if len(entries) > max_entries:
            lines.append(f"      ... {len(entries) - max_entries:,} more (json=true lists all)")
    return lines


def plot_label_distribution(labels: list[dict], names: dict[int, str], path: str | Path, imgsz: int = 640) -> Path:
    """PNG with the box count per class and the histogram of box sizes (sqrt of area at ``imgsz``) with the
    small/medium/large bounds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    cls = np.concatenate([lb["cls"].reshape(-1) for lb in labels]).astype(int) if labels else np.zeros(0, int)
    side = np.sqrt(np.prod(box_sizes_at(labels, imgsz), 1))
    fig = Figure(figsize=(10, 4), layout="tight")
    FigureCanvasAgg(fig)
    ax_cls, ax_size = fig.subplots(1, 2)
    ax_cls.bar(list(names.values()), np.bincount(cls, minlength=len(names))[:len(names)], color="tab:blue")
    ax_cls.set_title(f"boxes per class ({len(cls):,} boxes, {len(labels):,} images)")
    ax_cls.tick_params(axis="x", labelrotation=90 if len(names) > 10 else 0)
    bins = np.geomspace(1, max(imgsz, 2), 40)
    ax_size.hist(side, bins=bins, color="tab:orange")
    ax_size.set_xscale("log")
    for bound in (SMALL_MAX, MEDIUM_MAX):
        ax_size.axvline(bound, color="k", linestyle="--", linewidth=1)
        ax_size.text(bound, ax_size.get_ylim()[1] * 0.97, f" {bound} px", fontsize=8, va="top")
    buckets = size_buckets(box_sizes_at(labels, imgsz))
    ax_size.set_title(f"box size at imgsz {imgsz}: small {buckets['small']:,} / medium {buckets['medium']:,} / "
                      f"large {buckets['large']:,}", fontsize=10)
    ax_size.set_xlabel("sqrt(box area) in pixels")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
