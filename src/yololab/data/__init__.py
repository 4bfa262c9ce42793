"""Data pipeline: dataset files (YOLO/COCO/VOC), validation report, augmentations, DataLoader, synthetic set."""

from .augment import letterbox
from .cache import cache_root
from .check import check_data, format_check_report, format_problems, plot_label_distribution, unlabelled_split
from .config import DataConfig, DataConfigError, load_data_config
from .dataset import DEFAULT_HYP, YoloDataset, build_dataloader
from .formats import DetectionSet, convert, read_coco, read_voc, read_yolo, write_voc, write_yolo
from .image import ImageError, load_image
from .labels import load_labels
from .records import ImageRecord, write_coco
from .report import PROBLEM_KINDS, ProblemReport
from .synthetic import make_large_scene, make_synthetic, synthetic_dataset

__all__ = [
    "DEFAULT_HYP", "PROBLEM_KINDS", "DataConfig", "DataConfigError", "DetectionSet", "ImageError", "ImageRecord",
    "ProblemReport", "YoloDataset", "build_dataloader", "cache_root", "check_data", "convert", "format_check_report",
    "format_problems", "letterbox", "load_data_config", "load_image", "load_labels", "make_large_scene",
    "make_synthetic", "plot_label_distribution", "read_coco", "read_voc", "read_yolo", "synthetic_dataset",
    "unlabelled_split", "write_coco", "write_voc", "write_yolo",
]
