"""The one image decoder of predict, eval and train: orientation, bit depth, hostile files.

* EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), as torchvision's
  ``decode_image(..., apply_exif_orientation=True)`` does: a photo taken on its
  side is classified upright.
* High bit depths are scaled by their range, not by their content: 16-bit
  greyscale (``I;16``, ``I``) by 65535, float images (``F``, the [0, 1]
  convention of float TIFFs) by 1, then to 8 bits.
* A file that cannot be decoded, including a decompression bomb (more pixels
  than ``PIL.Image.MAX_IMAGE_PIXELS`` allows), raises EffnetError naming it;
  PIL's DecompressionBombWarning (images between one and two times the limit,
  which decode fine) is not shown.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import EffnetError

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


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode `path` fully: upright (EXIF), 8 bits per channel; EffnetError if it cannot be."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                upright = ImageOps.exif_transpose(img)
        return to_eight_bit(upright)
    except FileNotFoundError:
        raise EffnetError(f"image {path} not found") from None
    except Image.DecompressionBombError:
        raise EffnetError(f"cannot decode image {path}: it has more pixels than "
                          f"PIL.Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS:,}) allows "
                          "(a possible decompression bomb): remove or shrink it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EffnetError(f"cannot decode image {path} ({reason}): remove or replace the file"
                          ) from None
