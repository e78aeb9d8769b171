"""Recentring the cut-out on the 256x256 canvas SyncDreamer expects.

This reproduces the official ``prepare_inputs`` bit for bit (the conformance vectors check it),
including two of its habits worth knowing: the alpha bounding box is cropped with Pillow's
exclusive right/bottom edge, so the last row and column of the object are dropped, and the
scaled size is truncated with ``int()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from img2mesh.utils.images import composite_on_white

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image

IMAGE_SIZE = 256


@dataclass(frozen=True)
class Recentred:
    """The 256x256 input and how it was made from the cut-out."""

    rgba: "Image.Image"          # 256x256 RGBA before compositing (what generate reads)
    bbox: tuple[int, int, int, int]  # (min_x, min_y, max_x, max_y) of nonzero alpha, input pixels
    scale: float                 # input pixels -> output pixels
    size: tuple[int, int]        # (width, height) of the object after scaling
    offset: tuple[int, int]      # where its top-left corner sits on the canvas

    def on_white(self) -> np.ndarray:
        """H,W,3 float32 in [0, 1]: RGB composited on white, in float as the official code does."""
        return composite_on_white(self.rgba)


def alpha_bbox(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """(min_x, min_y, max_x, max_y) of the nonzero alpha pixels (inclusive maxima)."""
    ys, xs = np.nonzero(alpha)
    if xs.size == 0:
        raise ValueError("alpha is empty")
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _paste_centred(img: "Image.Image", size: int) -> tuple["Image.Image", tuple[int, int]]:
    from PIL import Image

    canvas = Image.new(img.mode, (size, size), 0)
    offset = ((size - img.width) // 2, (size - img.height) // 2)
    canvas.paste(img, offset)
    return canvas, offset


def recentre(cutout: "Image.Image", crop_size: int = 200, image_size: int = IMAGE_SIZE) -> Recentred:
    """Scale the object so its larger side is ``crop_size`` and centre it on ``image_size``².

    ``crop_size = -1`` only pads the whole image to a square and resizes it, as the official tool
    does (the object is not re-centred).
    """
    from PIL import Image

    rgba = cutout.convert("RGBA")
    bbox = alpha_bbox(np.asarray(rgba)[:, :, 3])
    if crop_size == -1:
        side = max(rgba.width, rgba.height)
        square, offset = _paste_centred(rgba, side)
        scale = image_size / side
        resized = square.resize((image_size, image_size), resample=Image.BICUBIC)
        size = (round(rgba.width * scale), round(rgba.height * scale))
        offset = (round(offset[0] * scale), round(offset[1] * scale))
        return Recentred(resized, bbox, scale, size, offset)
    object_img = rgba.crop(bbox)  # exclusive right/bottom edge, as the official code
    scale = crop_size / max(object_img.height, object_img.width)
    size = (int(scale * object_img.width), int(scale * object_img.height))
    object_img = object_img.resize(size, resample=Image.BICUBIC)
    canvas, offset = _paste_centred(object_img, image_size)
    return Recentred(canvas, bbox, scale, size, offset)


def recentred_at(cutout: "Image.Image", crop_size: int, size: int) -> Recentred:
    """The cut-out framed as the 256² input (``segment.crop_size``) but at ``size``² from the full-resolution
    photo: what a model working at another resolution sees of the same picture (enhance, refine)."""
    scaled = crop_size if crop_size == -1 else max(1, round(crop_size * size / IMAGE_SIZE))
    return recentre(cutout, scaled, size)


CUTOUT = "rgba.png"  # the segment stage's full-resolution cut-out


def framed_photo(segment_dir: "Path", crop_size: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The full-resolution cut-out (``segment/rgba.png``) framed as the 256² input but at ``size``²: on
    white (uint8) and its mask. The photo's own detail, not the 256² input upscaled (enhance, refine,
    the texture bake)."""
    from PIL import Image

    framed = recentred_at(Image.open(segment_dir / CUTOUT), crop_size, size).rgba
    image = (composite_on_white(framed) * 255).round().astype(np.uint8)
    return image, np.asarray(framed)[..., 3] > 127


def native_frame_size(segment_dir: "Path", crop_size: int, largest: int) -> int:
    """The framed size at which the photo's object keeps its own pixels (the cut-out's object spans
    ``crop_size`` of 256 there), at most ``largest`` and at least 256."""
    from PIL import Image

    if crop_size == -1:
        with Image.open(segment_dir / CUTOUT) as cutout:
            side = max(cutout.size)
    else:
        with Image.open(segment_dir / CUTOUT) as cutout:
            x0, y0, x1, y1 = alpha_bbox(np.asarray(cutout.convert("RGBA"))[:, :, 3])
        side = max(x1 - x0, y1 - y0) * IMAGE_SIZE / crop_size
    return int(min(max(IMAGE_SIZE, round(side)), largest))
