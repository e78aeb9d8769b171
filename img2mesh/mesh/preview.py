"""Turntable and still previews of a coloured mesh, rendered with the project's rasteriser."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
import torch

from img2mesh.generate.cameras import intrinsics, look_at_pose
from img2mesh.utils.files import atomic_save_image, atomic_write_bytes
from img2mesh.utils.raster import rasterize

log = logging.getLogger("img2mesh")


def render_view(mesh: "trimesh.Trimesh", azimuth: float, elevation: float = math.radians(20), size: int = 256,
                distance: float = 1.8) -> np.ndarray:
    """H,W,3 uint8 image of the mesh (world frame) on white, vertex colours with headlight shading."""
    pose = look_at_pose(azimuth, elevation, distance)
    K = intrinsics(size)
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    raster = rasterize(vertices, faces, torch.tensor(K, dtype=torch.float32),
                       torch.tensor(pose, dtype=torch.float32), size, size)
    image = np.full((size, size, 3), 255.0)
    covered = raster.mask.numpy()
    if covered.any():
        face = raster.face.numpy()[covered]
        bary = raster.bary.numpy()[covered]
        colors = mesh.visual.vertex_colors[:, :3].astype(np.float64) if mesh.visual.kind == "vertex" \
            else np.full((len(mesh.vertices), 3), 200.0)
        color = (colors[mesh.faces[face]] * bary[..., None]).sum(1)
        normals = mesh.face_normals[face]
        eye = -pose[:, :3].T @ pose[:, 3]
        centroid = mesh.triangles_center[face]
        light = eye - centroid
        light /= np.linalg.norm(light, axis=1, keepdims=True)
        shade = 0.35 + 0.65 * np.clip((normals * light).sum(1), 0, 1)
        image[covered] = color * shade[:, None]
    return image.clip(0, 255).astype(np.uint8)


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
