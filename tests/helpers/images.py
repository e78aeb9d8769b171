"""Small input images for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_rgba(path: Path, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """A small RGBA PNG with an opaque rectangle on transparent background."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size[1], size[0], 4), np.uint8)
    img[8:-8, 10:-10, :3] = rng.integers(0, 255, 3)
    img[8:-8, 10:-10, 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path
