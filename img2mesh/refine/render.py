"""A textured mesh rendered differentiably in its texture (and nothing else).

Geometry is fixed, so each camera is rasterised once (the project's rasteriser: face ids and
perspective-correct barycentrics per pixel) and kept as the per-pixel UV coordinates, coverage and
depth; a render is then one bilinear lookup of the texture at those UVs (``grid_sample``), on white.
The gradient of a render reaches the texels that pixels read, and only them. The mesh stage's
texture is sampled the same way (``mesh.texture.sample_texture``: texel centres at (i + 0.5)/size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from img2mesh.utils import cameras
from img2mesh.utils.raster import rasterize

if TYPE_CHECKING:
    import trimesh


@dataclass
class TexturedMesh:
    """A UV-mapped mesh in the reconstruction's world frame and its texture (H,W,3 uint8)."""

    vertices: np.ndarray  # V,3 world
    faces: np.ndarray  # F,3
    uvs: np.ndarray  # V,2 in [0, 1], v up
    texture: np.ndarray  # H,W,3 uint8

    @classmethod
    def from_glb(cls, path: Path) -> "TexturedMesh":
        """The mesh stage's ``mesh.glb`` (export frame) in the world frame, with its UVs and base colour."""
        from img2mesh.errors import StageError
        from img2mesh.mesh.export import load_mesh, to_world_frame

        mesh = to_world_frame(load_mesh(path))
        material = getattr(mesh.visual, "material", None)
        image = getattr(material, "baseColorTexture", None)
        if mesh.visual.kind != "texture" or image is None or mesh.visual.uv is None:
            raise StageError(f"refine: {path} has no UV texture to refine (run the mesh stage with mesh.texture on)")
        return cls(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64),
                   np.asarray(mesh.visual.uv, dtype=np.float64), np.asarray(image.convert("RGB")))

    def trimesh(self, texture: np.ndarray) -> "trimesh.Trimesh":
        """The same geometry and UVs with another texture (world frame), for export."""
        from img2mesh.mesh.texture import textured_mesh
        from img2mesh.mesh.unwrap import Unwrapped

        unwrapped = Unwrapped(np.arange(len(self.vertices)), self.faces, self.uvs)
        return textured_mesh(self.vertices, unwrapped, texture)


@dataclass
class CameraRaster:
    """What a render at one camera needs: per pixel its UV (H,W,2 as grid_sample coordinates), whether
    the mesh covers it, and its camera depth (inf where it does not)."""

    grid: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    K: np.ndarray
    pose: np.ndarray


def rasterise(mesh: TexturedMesh, K: np.ndarray, pose: np.ndarray, size: int, device: torch.device) -> CameraRaster:
    """Rasterise ``mesh`` once at one camera (size² pixels)."""
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32, device=device)
    faces = torch.tensor(mesh.faces, dtype=torch.long, device=device)
    raster = rasterize(vertices, faces, torch.tensor(K, dtype=torch.float32, device=device),
                       torch.tensor(pose, dtype=torch.float32, device=device), size, size)
    uvs = torch.tensor(mesh.uvs, dtype=torch.float32, device=device)
    covered = raster.mask
    corner_uvs = uvs[faces[raster.face.clamp(min=0)]]  # H,W,3,2
    uv = (corner_uvs * raster.bary[..., None]).sum(-2)
    grid = torch.stack([uv[..., 0] * 2 - 1, (1 - uv[..., 1]) * 2 - 1], -1)  # v up -> image rows down
    return CameraRaster(grid, covered, raster.depth, K, pose)


def render(texture: torch.Tensor, raster: CameraRaster) -> torch.Tensor:
    """(1, 3, H, W) render in [0, 1] on white of a (1, 3, T, T) texture in [0, 1]; differentiable in it."""
    sampled = F.grid_sample(texture, raster.grid[None].to(texture), mode="bilinear", padding_mode="border",
                            align_corners=False)
    mask = raster.mask[None, None].to(texture)
    return sampled * mask + (1 - mask)


def inverse_depth(raster: CameraRaster, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse camera depth (1, 1, size, size; larger is nearer) area-averaged over the covered pixels,
    and the coverage at that size (a pixel covers when most of it does): the render's depth condition
    before ``enhance.components.normalise_depth``."""
    covered = raster.mask.float()[None, None]
    inverse = torch.where(raster.mask, 1.0 / raster.depth.clamp(min=1e-6), torch.zeros_like(raster.depth))[None, None]
    area = F.interpolate(covered, size=(size, size), mode="area")
    value = F.interpolate(inverse, size=(size, size), mode="area") / area.clamp(min=1e-6)
    return value, area > 0.5


def camera_pool(count: int, size: int, seed: int, elevations_deg: tuple[float, float] = (-10.0, 60.0)
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` cameras at SyncDreamer's distance and focal length, elevations uniform in
    ``elevations_deg`` and azimuths uniform all around (RGSD's sampling, HiFi-123), seeded."""
    rng = np.random.default_rng(seed)
    K = cameras.intrinsics(size)
    return [(K, cameras.look_at_pose(rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(*elevations_deg))))
            for _ in range(count)]
