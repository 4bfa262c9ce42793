"""Model building: registry, YAML parser, core and research modules."""

# importing each module registers its classes for the YAML parser: heads and core blocks, the gradient-path designs
# (PRN, CSP stages, ELAN, YOLOv7 blocks), RepViT, RevCol, timm features_only models, GSConv / VoV-GSCSP, SPConv
from . import anchor_head, block, conv, elan, head, prn, repvit, revcol, slimneck, split_conv, timm_backbone  # noqa: F401
from .conv import fuse_modules
from .detector import DetectionModel
from .parse import ModelConfigError, load_model_yaml
from .registry import BuildContext, FeatureInfo, ModuleSpec, register, registered

__all__ = ["DetectionModel", "ModelConfigError", "BuildContext", "FeatureInfo", "ModuleSpec", "fuse_modules",
           "load_model_yaml", "register", "registered"]
