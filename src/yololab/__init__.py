"""yololab: build, train, evaluate, export and honestly compare YOLO detectors from pluggable modules."""

__version__ = "0.1.0"

from .api import YOLO  # noqa: E402
from .nn.registry import register  # noqa: E402

__all__ = ["YOLO", "__version__", "register"]
