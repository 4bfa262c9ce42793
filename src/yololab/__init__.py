"""yololab: build, train, evaluate, export and honestly compare YOLO detectors from pluggable modules."""

from ._version import __version__
from .utils.threads import apply_environment

apply_environment()  # before anything imports torch: its OpenMP runtime reads the environment once, when it loads

from .api import YOLO  # noqa: E402
from .errors import UserError  # noqa: E402
from .nn.registry import register  # noqa: E402

__all__ = ["YOLO", "UserError", "__version__", "register"]
