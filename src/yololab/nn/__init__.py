"""Model building: registry, YAML parser, core and research modules."""

from . import anchor_head, block, conv, head  # noqa: F401  (register the core modules)
from . import revcol  # noqa: F401  (RevCol reversible column backbone)
from . import elan, prn  # noqa: F401  (gradient-path designs: PRN, CSP stages, ELAN, YOLOv7 blocks)
from . import slimneck, split_conv  # noqa: F401  (GSConv / VoV-GSCSP, SPConv)
from . import repvit, timm_backbone  # noqa: F401  (RepViT backbone, timm features_only adapter)
from .conv import fuse_modules
from .detector import DetectionModel
from .parse import ModelConfigError, load_model_yaml
from .registry import BuildContext, FeatureInfo, ModuleSpec, register, registered

__all__ = ["DetectionModel", "ModelConfigError", "BuildContext", "FeatureInfo", "ModuleSpec", "fuse_modules",
           "load_model_yaml", "register", "registered"]
