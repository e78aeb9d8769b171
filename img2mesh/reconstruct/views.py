"""Reading a folder of views at known cameras, with their foreground masks.

A folder holds N RGB(A) images named by index in any zero padding (``0.png``, ``00.png``,
``000.png``) and, optionally, ``cameras.json`` (``K`` and world-to-camera ``poses``, the layout the
generate stage writes). Without ``cameras.json`` the views are SyncDreamer's 16 standard cameras.
Masks are soft (alpha in [0, 1]): from the alpha channel when there is one; otherwise from a
background remover when the caller passes one (the segment stage's carvekit, as the official code
does), else from the white-background threshold (speckle removed, holes kept open, edges unmixed
against white). The log and ``Views.mask_source`` say which.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from img2mesh.errors import InputError
from img2mesh.utils.images import white_background_matte

log = logging.getLogger("img2mesh")
# Masks of views without alpha: N,H,W,3 images on white -> N,H,W masks in [0, 1] and where they came from.
MaskMaker = Callable[[np.ndarray], tuple[np.ndarray, str]]
VIEW_NAME = re.compile(r"^(\d+)\.(png|jpg|jpeg|webp)$", re.IGNORECASE)


@dataclass
class Views:
    """Images (N,H,W,3 float in [0,1], on white), soft masks (N,H,W float32 in [0,1]), K (N,3,3), poses (N,3,4)."""

    images: np.ndarray
    masks: np.ndarray
    Ks: np.ndarray
    poses: np.ndarray
    mask_source: str

    @property
    def size(self) -> tuple[int, int]:
        return self.images.shape[2], self.images.shape[1]

    @property
    def silhouettes(self) -> np.ndarray:
        """Binary masks (N,H,W bool): where the soft mask is at least one half."""
        return self.masks >= 0.5


def find_view_files(folder: Path) -> list[Path]:
    """The view images of a folder, ordered by index; indices must be 0..N-1 without gaps."""
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        match = VIEW_NAME.match(path.name)
        if match:
            index = int(match.group(1))
            if index in found:
                raise InputError(f"{folder}: two files for view {index} ({found[index].name}, {path.name})")
            found[index] = path
    if not found:
        raise InputError(f"{folder} holds no views (expected 0.png, 1.png, ... in any zero padding)")
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise InputError(f"{folder}: views {', '.join(map(str, missing[:5]))} are missing")
    return [found[i] for i in range(len(found))]


def read_cameras(folder: Path, count: int, width: int, path: Optional[Path] = None) -> tuple[np.ndarray, np.ndarray]:
    """K (N,3,3) for images ``width`` pixels wide and w2c poses (N,3,4).

    From cameras.json (its K is for its ``image_size``, 256 when absent), or the 16 SyncDreamer cameras.
    """
    from img2mesh.utils import cameras

    path = path or folder / "cameras.json"
    if not path.is_file():
        if count != cameras.VIEW_COUNT:
            raise InputError(f"{folder} has {count} views and no cameras.json; "
                             f"without one the {cameras.VIEW_COUNT} SyncDreamer cameras are assumed")
        return np.repeat(cameras.intrinsics(width)[None], count, 0), cameras.target_poses()
    try:
        data = json.loads(path.read_text())
        poses = np.asarray(data["poses"], dtype=np.float64)
        K = np.asarray(data["K"], dtype=np.float64)
        size = float(data.get("image_size", cameras.IMAGE_SIZE))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is not a cameras file ({exc})") from None
    Ks = (np.repeat(K[None], len(poses), 0) if K.shape == (3, 3) else K).copy()
    if poses.ndim == 0 or len(poses) != count:
        raise InputError(f"{path} describes {len(poses) if poses.ndim else 0} cameras but the folder holds {count} views")
    if Ks.ndim == 0 or len(Ks) != count:
        raise InputError(f"{path} has {len(Ks) if Ks.ndim else 0} intrinsics K for {count} views (give one, or one per view)")
    if poses.shape[1:] != (3, 4):
        raise InputError(f"{path}: each pose must be a 3x4 world-to-camera matrix [R|t], got {poses.shape[1:]}")
    if Ks.shape[1:] != (3, 3):
        raise InputError(f"{path}: K must be a 3x3 matrix (or one per view), got {Ks.shape[1:]}")
    Ks[:, :2] *= width / size
    return Ks, poses


def load_views(folder: Path, image_size: int = 0, cameras_file: Optional[Path] = None,
               mask_maker: Optional[MaskMaker] = None) -> Views:
    """Read and check a views folder; ``image_size`` > 0 resizes the views (and K) to that size.

    ``cameras_file`` overrides ``folder/cameras.json`` (the generate stage keeps one for all samples).
    ``mask_maker`` makes the masks of views without alpha (default: :func:`threshold_masks`).
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"views folder {folder} does not exist")
    files = find_view_files(folder)
    images, alphas, sizes = [], [], set()
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()
                sizes.add(img.size)
                rgba = img.convert("RGBA") if img.mode in ("RGBA", "LA", "P") else img.convert("RGB")
        except OSError as exc:
            raise InputError(f"view {path} is unreadable ({exc})") from None
        if image_size and rgba.size != (image_size, image_size):
            rgba = rgba.resize((image_size, image_size), Image.BICUBIC)
        values = np.asarray(rgba).astype(np.float32) / 255.0
        if values.shape[-1] == 4:
            alpha = values[..., 3]
            images.append(values[..., :3] * alpha[..., None] + (1 - alpha[..., None]))
            alphas.append(alpha)
        else:
            images.append(values)
            alphas.append(None)
    if len(sizes) > 1:
        raise InputError(f"views in {folder} have different sizes: {sorted(sizes)}")
    width = sizes.pop()[0]
    Ks, poses = read_cameras(folder, len(files), image_size or width, cameras_file)
    use_alpha = all(a is not None for a in alphas) and not all(a.min() >= 0.999 for a in alphas)
    if use_alpha:
        masks, source = np.stack(alphas), "alpha"
    else:
        masks, source = (mask_maker or threshold_masks)(np.stack(images))
    views = Views(np.stack(images), np.asarray(masks, dtype=np.float32), Ks, poses, source)
    log.info("reconstruct: %d views of %dx%d, masks from the %s", len(files), *images[0].shape[1::-1], source)
    empty = [i for i, m in enumerate(views.silhouettes) if not m.any()]
    if empty:
        raise InputError(f"{folder}: the mask of view {empty[0]} is empty (no object visible)")
    return views


def threshold_masks(images: np.ndarray) -> tuple[np.ndarray, str]:
    """Soft masks of views on white (the threshold's silhouette, its edges unmixed against white:
    ``utils.images.white_background_matte``): the fallback when no background remover is at hand."""
    return np.stack([white_background_matte(im) for im in images]), "white-background threshold"


def pixel_rays(K: np.ndarray, pose: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """World-space origin (3,) and unit directions (H,W,3) through pixel centres (x + 0.5, y + 0.5).

    Renders and SyncDreamer's training views are pixel-centre images; the official NeuS casts
    through pixel corners, which shifts its meshes by half a pixel.
    """
    xs, ys = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pixels = np.stack([xs, ys, np.ones_like(xs)], -1)
    cam_dirs = pixels @ np.linalg.inv(K).T
    R, t = pose[:, :3], pose[:, 3]
    dirs = cam_dirs @ R  # R^T applied to each row vector
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    return -R.T @ t, dirs
