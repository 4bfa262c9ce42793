"""Network input from an image, as validation prepares it; the fixed sample scene used by export and bench checks."""

from __future__ import annotations

import numpy as np
import torch

from ..cfg import ConfigError
from ..data.augment import letterbox, resize_long_side
from ..data.synthetic import make_large_scene


def check_imgsz(imgsz: int, stride: int, owner: str = "the model's") -> int:
    """``imgsz`` when it is a multiple of the largest ``stride`` of a model, else a ConfigError proposing the nearest
    one: an input size is never changed silently."""
    if imgsz % stride:
        raise ConfigError(f"imgsz={imgsz} is not a multiple of {owner} largest stride {stride} "
                          f"(try imgsz={max(stride, round(imgsz / stride) * stride)})")
    return imgsz


def preprocess(image: np.ndarray, imgsz: int) -> tuple[torch.Tensor, tuple]:
    """RGB uint8 image -> ((1, 3, imgsz, imgsz) float tensor in [0, 1], ratio_pad), as validation does it.

    ``ratio_pad`` = ((gain_h, gain_w), (pad_w, pad_h)) maps original pixels into the network input.
    """
    resized = resize_long_side(image, imgsz)
    img, (gain_h, gain_w), pad = letterbox(resized, imgsz, scaleup=False)
    gain = (gain_h * resized.shape[0] / image.shape[0], gain_w * resized.shape[1] / image.shape[1])
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float() / 255
    return x, (gain, pad)


def sample_image(height: int = 480, width: int = 640) -> np.ndarray:
    """A fixed synthetic scene (shapes on a textured background): the default export-check image."""
    return make_large_scene(height, width, n_objects=12, object_px=(16, 120), seed=0)[0]
