"""The one image loader: decode a file with PIL into RGB (or greyscale), errors named.

Training (image folders) and inference (predict, eval) read images here.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import EffnetError
from ..io_utils import first_line

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_GREY_MODES = ("1", "L", "I;16", "I;16B", "I;16L", "I")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I")


def load_image(path: str | os.PathLike, keep_grey: bool = False) -> Image.Image:
    """Decode an image file: JPEG, PNG and the rest PIL reads, greyscale, RGBA, 16-bit.

    Returns RGB; with `keep_grey`, a greyscale file stays one channel ('L').
    Transparent pixels are composited onto white. A file that cannot be
    decoded raises EffnetError naming it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if keep_grey and img.mode in _GREY_MODES:
                return to_8bit(img).convert("L")
            return to_rgb(img)
    except FileNotFoundError:
        raise EffnetError(f"image {path} not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise EffnetError(f"cannot decode image {path}: {first_line(err)}; remove or replace "
                          "the file") from None


def to_8bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit integer greyscale scaled to 8 bits (8-bit images unchanged)."""
    if img.mode not in _WIDE_MODES:
        return img
    arr = np.asarray(img, dtype=np.float64)
    scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8))


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB copy of any PIL image."""
    img = to_8bit(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img.copy()
