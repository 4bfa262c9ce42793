"""yololab: build, train, evaluate, export and honestly compare YOLO detectors from pluggable modules."""

__version__ = "0.1.0"

from .nn.registry import register  # noqa: E402

__all__ = ["__version__", "register"]
