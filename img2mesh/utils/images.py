"""Image helpers several stages share: compositing on white, the white-background mask, image grids."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

WHITE_THRESHOLD = 0.93  # a pixel is background when all channels are above this (on white renders)


def composite_on_white(rgba: "Image.Image") -> np.ndarray:
    """RGBA image -> H,W,3 float32 in [0,1] over a white background."""
    values = np.asarray(rgba).astype(np.float32) / 255.0
    alpha = values[:, :, 3:]
    return values[:, :, :3] * alpha + 1 - alpha


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Open with a 3x3 window: drops single-pixel speckle and nothing else.

    No closing and no hole filling: closing glues limbs to bodies, and filling turns the background
    seen through a handle or a ring into foreground (which then closes it with a membrane).
    """
    from scipy import ndimage

    return ndimage.binary_opening(mask, iterations=1)


def white_background_mask(rgb: np.ndarray) -> np.ndarray:
    """Foreground of an image rendered on white: any channel darker than the threshold."""
    return clean_mask((rgb < WHITE_THRESHOLD).any(-1))


def grid(images: np.ndarray, columns: int) -> np.ndarray:
    """N,H,W,3 -> one image with ``columns`` images per row (white where a row is short)."""
    n, h, w, c = images.shape
    rows = math.ceil(n / columns)
    canvas = np.full((rows * h, columns * w, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, columns)
        canvas[r * h:(r + 1) * h, k * w:(k + 1) * w] = img
    return canvas
