"""Model building: registry, YAML parser, core and research modules."""

from . import (  # noqa: F401  (register the core modules)  # noqa: F401  (gradient-path designs: PRN, CSP stages, ELAN, YOLOv7 blocks)  # noqa: F401  (GSConv / VoV-GSCSP, SPConv)  # noqa: F401  (RepViT backbone, timm features_only adapter)
           anchor_head,
           block,
           conv,
           elan,
           head,
           prn,
           repvit,
           revcol,  # noqa: F401  (RevCol reversible column backbone)
           slimneck,
           split_conv,
           timm_backbone,
)
from .conv import fuse_modules
from .detector import DetectionModel
from .parse import ModelConfigError, load_model_yaml
from .registry import BuildContext, FeatureInfo, ModuleSpec, register, registered

__all__ = ["DetectionModel", "ModelConfigError", "BuildContext", "FeatureInfo", "ModuleSpec", "fuse_modules",
           "load_model_yaml", "register", "registered"]
