"""Turntable and still previews of a coloured mesh, rendered with the project's rasteriser."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from img2mesh.utils.cameras import intrinsics, look_at_pose
from img2mesh.utils.files import atomic_save_image, atomic_write_bytes
from img2mesh.utils.raster import rasterize

if TYPE_CHECKING:
    import trimesh

log = logging.getLogger("img2mesh")


def surface_color(mesh: "trimesh.Trimesh", face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Albedo (M,3 float in [0, 255]) at points given by face and barycentrics: texture, vertex colours or grey."""
    if mesh.visual.kind == "texture" and getattr(mesh.visual.material, "baseColorTexture", None) is not None:
        from img2mesh.mesh.texture import sample_texture

        texture = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
        uv = (np.asarray(mesh.visual.uv)[mesh.faces[face]] * bary[..., None]).sum(1)
        return sample_texture(texture, uv)
    if mesh.visual.kind == "vertex":
        colors = mesh.visual.vertex_colors[:, :3].astype(np.float64)
        return (colors[mesh.faces[face]] * bary[..., None]).sum(1)
    return np.full((len(face), 3), 200.0)


def render(mesh: "trimesh.Trimesh", K: np.ndarray, pose: np.ndarray, size: int, shading: bool = True) -> np.ndarray:
    """H,W,3 uint8 image of the mesh (world frame) on white, seen by K and w2c pose (3,4).

    ``shading`` adds a headlight for previews; without it the image is the bare albedo, which is
    what the benchmark compares with ground-truth renders.
    """
    raster = rasterize(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long),
                       torch.tensor(K, dtype=torch.float32), torch.tensor(pose, dtype=torch.float32), size, size)
    image = np.full((size, size, 3), 255.0)
    covered = raster.mask.numpy()
    if covered.any():
        face = raster.face.numpy()[covered]
        color = surface_color(mesh, face, raster.bary.numpy()[covered].astype(np.float64))
        if shading:
            eye = -pose[:, :3].T @ pose[:, 3]
            light = eye - mesh.triangles_center[face]
            light /= np.linalg.norm(light, axis=1, keepdims=True)
            color = color * (0.35 + 0.65 * np.clip((mesh.face_normals[face] * light).sum(1), 0, 1))[:, None]
        image[covered] = color
    return image.round().clip(0, 255).astype(np.uint8)


def render_view(mesh: "trimesh.Trimesh", azimuth: float, elevation: float = math.radians(20), size: int = 256,
                distance: float = 1.8) -> np.ndarray:
    """A shaded preview of the mesh from a camera on a sphere around the origin."""
    return render(mesh, intrinsics(size), look_at_pose(azimuth, elevation, distance), size)


def write_previews(mesh: "trimesh.Trimesh", folder: Path, frames: int = 36) -> list[Path]:
    """``preview.png`` (the input view) and ``turntable.mp4``, or ``turntable.gif`` without ffmpeg."""
    import imageio.v3 as iio

    images = [render_view(mesh, 2 * math.pi * i / frames) for i in range(frames)]
    written = [Path(folder) / "preview.png"]
    atomic_save_image(written[0], images[0])
    try:
        data = iio.imwrite("<bytes>", np.stack(images), extension=".mp4", fps=12, codec="libx264",
                           macro_block_size=1)
        path = Path(folder) / "turntable.mp4"
    except Exception as exc:  # no ffmpeg plugin or binary: a GIF needs neither
        log.info("mesh: no ffmpeg (%s); writing the turntable as a GIF", type(exc).__name__)
        buffer = io.BytesIO()
        from PIL import Image

        frames_pil = [Image.fromarray(im) for im in images]
        frames_pil[0].save(buffer, format="GIF", save_all=True, append_images=frames_pil[1:], duration=83, loop=0)
        data, path = buffer.getvalue(), Path(folder) / "turntable.gif"
    atomic_write_bytes(path, data)
    written.append(path)
    return written
