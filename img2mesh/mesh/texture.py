"""Baking surface colours into a UV texture: unwrap, rasterise texels, colour them, pad the charts.

Each texel's centre is located on the surface through the UV triangle that covers it (the project's
rasteriser in UV space, so CPU and GPU give the same texels), coloured by the same function as the
vertex colours (``bake.SurfaceColours``), and texels outside every chart take the colour of the
nearest covered texel so that bilinear filtering and mip-maps never pull background into a seam.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from img2mesh.mesh.unwrap import Unwrapped, unwrap
from img2mesh.utils.raster import Raster, rasterize

if TYPE_CHECKING:
    import trimesh

MATERIAL = "mesh_albedo"  # the texture is written as mesh_albedo.png next to mesh.obj / mesh.mtl
ColorFn = Callable[[np.ndarray], np.ndarray]


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int, device: torch.device) -> Raster:
    """Which UV triangle covers each texel centre, with barycentrics. Row 0 is the top (v = 1)."""
    screen = np.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size, np.ones(len(uvs))], -1)
    identity = torch.eye(3, device=device)
    pose = torch.cat([identity, torch.zeros(3, 1, device=device)], 1)  # z = 1 everywhere: affine barycentrics
    return rasterize(torch.tensor(screen, dtype=torch.float32, device=device),
                     torch.tensor(faces, dtype=torch.long, device=device), identity, pose, size, size)


def pad_charts(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Fill every texel outside the charts with the colour of its nearest covered texel."""
    from scipy import ndimage

    if covered.all() or not covered.any():
        return image
    rows, cols = ndimage.distance_transform_edt(~covered, return_distances=False, return_indices=True)
    return image[rows, cols]


def bake(vertices: np.ndarray, unwrapped: Unwrapped, size: int, color_fn: ColorFn,
         device: torch.device) -> tuple[np.ndarray, float]:
    """An RGB uint8 ``size``² texture of ``color_fn`` on the surface, and the fraction of texels charts cover."""
    raster = rasterize_uv(unwrapped.uvs, unwrapped.faces, size, device)
    covered = raster.mask.cpu().numpy()
    face = raster.face.cpu().numpy()[covered]
    bary = raster.bary.cpu().numpy()[covered].astype(np.float64)
    corners = vertices[unwrapped.vertex_map][unwrapped.faces[face]]  # M,3,3
    points = (corners * bary[..., None]).sum(1)
    image = np.full((size, size, 3), 255, np.uint8)
    if len(points):
        image[covered] = (np.asarray(color_fn(points)) * 255).round().clip(0, 255).astype(np.uint8)
    return pad_charts(image, covered), float(covered.mean())


def textured_mesh(vertices: np.ndarray, unwrapped: Unwrapped, texture: np.ndarray) -> "trimesh.Trimesh":
    """A mesh with UVs and a PBR material whose base colour is ``texture`` (matte, not metallic)."""
    import trimesh
    from PIL import Image

    material = trimesh.visual.material.PBRMaterial(name=MATERIAL, baseColorTexture=Image.fromarray(texture),
                                                   metallicFactor=0.0, roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=unwrapped.uvs, material=material)
    return trimesh.Trimesh(vertices[unwrapped.vertex_map], unwrapped.faces, visual=visual, process=False)


def texture_mesh(mesh: "trimesh.Trimesh", size: int, color_fn: ColorFn,
                 device: torch.device) -> tuple["trimesh.Trimesh", dict]:
    """Unwrap ``mesh``, bake ``color_fn`` into a ``size``² texture; the textured mesh and facts for the manifest."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    unwrapped = unwrap(vertices, np.asarray(mesh.faces), size)
    texture, coverage = bake(vertices, unwrapped, size, color_fn, device)
    return textured_mesh(vertices, unwrapped, texture), {
        "texture_size": size, "texture_coverage": round(coverage, 4), "uv_vertices": int(len(unwrapped.uvs))}


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup (N,3 float in [0, 255]) of an H,W,3 texture at UVs (N,2), v up."""
    height, width = texture.shape[:2]
    x = uv[:, 0] * width - 0.5
    y = (1.0 - uv[:, 1]) * height - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    tex = texture.astype(np.float64)

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return tex[yy.clip(0, height - 1), xx.clip(0, width - 1)]

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy
