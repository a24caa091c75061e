"""The one image loader of predict, eval and train: orientation, bit depth, hostile files.

* EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), as torchvision's
  ``decode_image(..., apply_exif_orientation=True)`` does: a photo taken on its
  side is classified upright.
* High bit depths are scaled by their range, not by their content: 16-bit
  greyscale (``I;16``, ``I``) by 65535, float images (``F``, the [0, 1]
  convention of float TIFFs) by 1, then to 8 bits.
* Transparent pixels are composited onto white.
* A file that cannot be decoded, including a decompression bomb (more pixels
  than ``PIL.Image.MAX_IMAGE_PIXELS`` allows), raises EffnetError naming it;
  PIL's DecompressionBombWarning (images between one and two times the limit,
  which decode fine) is not shown.
"""

from __future__ import annotations

import contextlib
import os
import stat
import warnings
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import EffnetError
from ..io_utils import first_line

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_eight_bit(img: Image.Image) -> Image.Image:
    """An 8-bit version of a 16-bit or float image, scaled by the mode's range."""
    if img.mode in _SIXTEEN_BIT:
        arr = np.asarray(img, dtype=np.float64) / 65535.0
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
    else:
        return img
    arr = np.nan_to_num(arr, nan=0.0)
    return Image.fromarray(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8), mode="L")


@contextlib.contextmanager
def _regular_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """`path` opened for reading if it is a regular file (opened without blocking, then
    checked: no window in which a FIFO could be swapped in)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise EffnetError(f"{path} is not a regular file (a FIFO, device or socket): "
                              "skipped; give image files only")
        yield f


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode `path` fully: upright (EXIF), 8 bits per channel; EffnetError if it cannot be.

    Only regular files are read: a FIFO, device or socket named like an image would block or
    never end, and is refused instead.
    """
    try:
        with warnings.catch_warnings(), _regular_file(path) as f:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(f) as img:
                img.load()
                upright = ImageOps.exif_transpose(img)
        return to_eight_bit(upright)
    except EffnetError:
        raise
    except FileNotFoundError:
        raise EffnetError(f"image {path} not found") from None
    except Image.DecompressionBombError:
        raise EffnetError(f"cannot decode image {path}: it has more pixels than "
                          f"PIL.Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS:,}) allows "
                          "(a possible decompression bomb): remove or shrink it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise EffnetError(f"cannot decode image {path} ({first_line(err)}): remove or replace "
                          "the file") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB copy of any 8-bit PIL image, transparent pixels composited onto white."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img.copy()


def load_image(path: str | os.PathLike, keep_grey: bool = False) -> Image.Image:
    """Decode an image file (:func:`open_image`) as RGB; with `keep_grey`, greyscale stays 'L'."""
    img = open_image(path)
    if keep_grey and img.mode in ("1", "L"):
        return img.convert("L")
    return to_rgb(img)
