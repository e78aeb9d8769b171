"""Image helpers several stages share: compositing on white, the white-background mask, image grids."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

WHITE_THRESHOLD = 0.93  # a pixel is background when all channels are above this (on white renders)
SPECKLE_PX = 8  # a foreground blob smaller than this is noise, not object
MATTE_CORE_PX = 4  # the object's own colour is read this far inside the thresholded silhouette (past a blurred edge)
MATTE_BAND_PX = 2  # pixels outside the thresholded silhouette that may still hold a little object
MATTE_MIN_CONTRAST = 0.15  # below this distance from white the colour cannot be unmixed: the threshold stays


def composite_on_white(rgba: "Image.Image") -> np.ndarray:
    """RGBA image -> H,W,3 float32 in [0,1] over a white background."""
    values = np.asarray(rgba).astype(np.float32) / 255.0
    alpha = values[:, :, 3:]
    return values[:, :, :3] * alpha + 1 - alpha


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Drop speckle: connected blobs (8-neighbourhood) of fewer than SPECKLE_PX pixels.

    No opening: it also erases wires and limbs one or two pixels wide, which then carve the other views'
    hull. No closing and no hole filling: closing glues limbs to bodies, and filling turns the background
    seen through a handle or a ring into foreground (which then closes it with a membrane).
    """
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= SPECKLE_PX
    keep[0] = False
    return keep[labels]


def white_background_mask(rgb: np.ndarray) -> np.ndarray:
    """Foreground of an image rendered on white: any channel darker than the threshold."""
    return clean_mask((rgb < WHITE_THRESHOLD).any(-1))


def white_background_matte(rgb: np.ndarray) -> np.ndarray:
    """Soft foreground (H,W float32 in [0, 1]) of an image on white: the thresholded silhouette with its edge unmixed.

    A pixel on the object's edge is ``alpha * colour + (1 - alpha) * white``. The white threshold calls it
    foreground as soon as ``alpha * (1 - colour)`` passes 0.07, so on a blurred view (a decoded one) a dark
    object's silhouette grows by about 1.5 blur sigmas. Unmixing each edge pixel against the colour of the
    nearest pixel MATTE_CORE_PX inside the silhouette gives back its alpha (the exact alpha where the colour
    is flat). Near-white colours, and parts too thin to have an inside of their own (wires, limbs a few
    pixels wide, whose nearest inside is another part's), keep the threshold's answer.
    """
    from scipy import ndimage

    mask = white_background_mask(rgb)
    core = ndimage.binary_erosion(mask, iterations=MATTE_CORE_PX)
    soft = mask.astype(np.float32)
    if not core.any():
        return soft
    distance, (rows, cols) = ndimage.distance_transform_edt(~core, return_indices=True)
    towards_white = 1.0 - rgb[rows, cols]  # the object's colour next to each pixel, as a distance from white
    contrast = (towards_white ** 2).sum(-1)
    alpha = ((1.0 - rgb) * towards_white).sum(-1) / np.maximum(contrast, 1e-6)
    band = ndimage.binary_dilation(mask, iterations=MATTE_BAND_PX) & ~core & (contrast > MATTE_MIN_CONTRAST ** 2)
    band &= distance <= MATTE_CORE_PX + MATTE_BAND_PX + 1  # an edge of a thick part, not a thin part far from one
    soft[band] = np.clip(alpha[band], 0.0, 1.0)
    return soft


def shrink(image: np.ndarray, size: int) -> np.ndarray:
    """Area-average an H,W[,C] float image (a mask, a view) to size x size (float32)."""
    from PIL import Image

    if image.ndim == 2:
        return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize((size, size), Image.BOX))
    return np.stack([shrink(image[..., c], size) for c in range(image.shape[-1])], -1)


def grid(images: np.ndarray, columns: int) -> np.ndarray:
    """N,H,W,3 -> one image with ``columns`` images per row (white where a row is short)."""
    n, h, w, c = images.shape
    rows = math.ceil(n / columns)
    canvas = np.full((rows * h, columns * w, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, columns)
        canvas[r * h:(r + 1) * h, k * w:(k + 1) * w] = img
    return canvas
