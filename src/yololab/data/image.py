"""Image files: cheap validation (header, truncation, mode) and decoding to 8-bit RGB."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import UserError

# Suffixes that OpenCV decodes; folders are scanned for these (case-insensitive).
IMG_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
_PIL_FORMATS = {"BMP", "JPEG", "MPO", "PNG", "TIFF", "WEBP"}
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_MODE_NAMES = {"1": "1-bit", "L": "greyscale", "LA": "greyscale+alpha", "P": "palette", "PA": "palette+alpha",
               "RGBA": "RGBA", "CMYK": "CMYK", "I;16": "16-bit greyscale", "I;16B": "16-bit greyscale",
               "I": "32-bit integer", "F": "32-bit float", "RGB;16": "16-bit RGB"}


class ImageError(UserError):
    """An image file that cannot be used; ``kind`` is a ProblemReport kind."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def is_image_file(path: str | Path) -> bool:
    """True when the suffix is one OpenCV decodes."""
    return Path(path).suffix.lower() in IMG_SUFFIXES


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB uint8 ``(H, W, 3)`` array (EXIF orientation applied).

    Greyscale, RGBA (alpha dropped), palette and 16-bit images are converted to 8-bit RGB.
    Raises FileNotFoundError for a missing file and ImageError for one that does not decode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    encoded = np.fromfile(path, np.uint8)
    if encoded.size == 0:
        raise ImageError("unreadable_image", f"{path}: empty file (0 bytes), not an image")
    img = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageError("unreadable_image", f"{path}: not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def inspect_image(path: str | Path) -> tuple[tuple[int, int], str | None]:
    """Validate an image without decoding every pixel.

    Returns ``((h, w), note)``: the size ``load_image`` will return and, for images that are not
    8-bit RGB, a note saying what gets converted (else None). Raises ImageError (with a
    ProblemReport kind) for missing, undecodable or truncated files.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError("missing_image", f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            fmt, mode, (w, h) = im.format, im.mode, im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError("unreadable_image", f"not a decodable image ({type(e).__name__}: {e})") from None
    if fmt not in _PIL_FORMATS:
        raise ImageError("unreadable_image", f"unsupported image format {fmt}")
    if w < 2 or h < 2:
        raise ImageError("unreadable_image", f"image is only {w}x{h} pixels")
    if fmt in ("JPEG", "MPO") and not _jpeg_complete(path):
        raise ImageError("truncated_image", "JPEG data ends before the end-of-image marker")
    if orientation in _TRANSPOSING_ORIENTATIONS:
        w, h = h, w
    if fmt == "PNG" and mode == "RGB" and _png_bit_depth(path) == 16:
        mode = "RGB;16"
    note = None if mode == "RGB" else f"{_MODE_NAMES.get(mode, mode)} image converted to 8-bit RGB"
    return (h, w), note


def _jpeg_complete(path: Path) -> bool:
    """True when a JPEG ends with its end-of-image marker, or (trailing bytes) still decodes fully."""
    with open(path, "rb") as f:
        f.seek(-2, 2)
        if f.read() == b"\xff\xd9":
            return True
    try:
        with Image.open(path) as im:
            im.load()
    except OSError:
        return False
    return True


def _png_bit_depth(path: Path) -> int:
    """Bits per sample from a PNG's IHDR chunk (Pillow reports 16-bit RGB as plain RGB)."""
    with open(path, "rb") as f:
        header = f.read(25)
    return header[24] if len(header) == 25 else 8
