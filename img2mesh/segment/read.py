"""Reading and validating the user's photo, and normalising it to 8-bit RGB or RGBA once.

Everything exotic (16-bit, greyscale, palette, CMYK, EXIF rotation) ends here, so no later stage
sees anything but ``RGB`` or ``RGBA`` uint8. Validation happens before a run folder is touched.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from img2mesh.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

# Modes whose transparency survives conversion to RGBA; all others become RGB.
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# A photo smaller than this on a side cannot hold an object SyncDreamer can see (its input is 256²,
# the object 200 px across): refused with a line rather than blown up 20-fold or worse.
MIN_SIDE = 16


def _to_8bit_grey(img: "Image.Image") -> "Image.Image":
    """16/32-bit integer or float greyscale scaled (not clipped) to 8 bits."""
    from PIL import Image

    values = np.asarray(img)
    if img.mode == "F":
        peak = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        scaled = values / peak * 255.0
    else:
        peak = 255 if values.max(initial=0) <= 255 else 65535
        scaled = values.astype(np.float64) / peak * 255.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def normalise_mode(img: "Image.Image") -> "Image.Image":
    """Any Pillow mode to RGB (opaque sources) or RGBA (sources with transparency)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _to_8bit_grey(img)
    if img.mode == "P":
        return img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in _ALPHA_MODES:
        return img.convert("RGBA")
    return img.convert("RGB")  # 1, L, RGB, CMYK, YCbCr, LAB, HSV


def load_image(path: Path, max_pixels: int) -> "Image.Image":
    """Open, validate and normalise an input photo.

    Raises :class:`InputError` with one line for: not an image, unreadable or truncated data,
    an image under ``MIN_SIDE`` pixels a side, more than ``max_pixels`` pixels (checked from the header, before any
    decoding, so decompression bombs are never decoded), and an RGBA image whose alpha is empty.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow then refuses bombs before allocating pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if min(width, height) < MIN_SIDE:
                    raise InputError(f"{path} is {width}x{height} pixels: too small to hold an object "
                                     f"(at least {MIN_SIDE} pixels a side)")
                if width * height > max_pixels:
                    raise InputError(
                        f"{path} has {width}x{height} = {width * height} pixels, over "
                        f"segment.max_pixels = {max_pixels}"
                    )
                img.load()  # full decode: truncated data fails here
                img = ImageOps.exif_transpose(img)
                img = normalise_mode(img)
    except UnidentifiedImageError:
        if path.stat().st_size == 0:
            raise InputError(f"{path} is empty (0 bytes)") from None
        raise InputError(f"{path} is not an image (no format Pillow reads: png, jpg, webp, ...)") from None
    except Image.DecompressionBombError:
        raise InputError(f"{path} is too large to decode safely (over segment.max_pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path} is unreadable or corrupt ({exc})") from None
    if img.mode == "RGBA" and img.getchannel("A").getextrema()[1] == 0:
        raise InputError(f"{path} has an alpha channel that is empty (fully transparent)")
    return img


def has_meaningful_alpha(img: "Image.Image") -> bool:
    """True for RGBA images whose alpha is not fully opaque everywhere."""
    return img.mode == "RGBA" and img.getchannel("A").getextrema()[0] < 255
