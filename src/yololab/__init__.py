"""yololab: build, train, evaluate, export and honestly compare YOLO detectors from pluggable modules."""

from ._version import __version__
from .api import YOLO
from .nn.registry import register

__all__ = ["YOLO", "__version__", "register"]
