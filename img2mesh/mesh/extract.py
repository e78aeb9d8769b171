"""From a trained field to a clean mesh: the SDF on a grid, marching cubes, its components."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from img2mesh.reconstruct.fields import NeuSField

if TYPE_CHECKING:
    import trimesh


@torch.no_grad()
def sdf_grid(field: NeuSField, resolution: int, bound: float, device: torch.device, chunk: int = 262144) -> np.ndarray:
    """SDF sampled at resolution³ points spanning [-bound, bound]³, indexed [x, y, z]."""
    line = torch.linspace(-bound, bound, resolution, device=device)
    values = np.empty((resolution, resolution, resolution), dtype=np.float32)
    for i in range(resolution):  # one x-slab at a time keeps memory flat at 512³
        ys, zs = torch.meshgrid(line, line, indexing="ij")
        points = torch.stack([torch.full_like(ys, float(line[i])), ys, zs], -1).reshape(-1, 3)
        slab = torch.cat([field.sdf(p) for p in points.split(chunk)])
        values[i] = slab.reshape(resolution, resolution).float().cpu().numpy()
    return values


def marching_cubes(values: np.ndarray, bound: float) -> "trimesh.Trimesh":
    """Zero level set of an [x, y, z] SDF grid as a mesh in world units, faces wound outwards."""
    import mcubes
    import trimesh

    if values.min() >= 0 or values.max() <= 0:
        raise ValueError("the field has no surface inside the extraction bounds")
    # A surface that reaches the box (a floater, a background blob) would end in an open rim;
    # outside-valued borders cap it, so every component is closed (watertight exports).
    values = values.copy()
    for axis in range(3):
        for end in (0, -1):
            border = [slice(None)] * 3
            border[axis] = end
            values[tuple(border)] = np.maximum(values[tuple(border)], 1e-6)
    vertices, faces = mcubes.marching_cubes(values, 0.0)
    vertices = vertices / (values.shape[0] - 1) * 2 * bound - bound
    mesh = trimesh.Trimesh(vertices, faces, process=True)
    if mesh.volume < 0:  # marching cubes winds towards increasing SDF, i.e. inwards for us
        mesh.invert()
    return mesh


def keep_components(mesh: "trimesh.Trimesh", min_fraction: float) -> tuple["trimesh.Trimesh", int, int]:
    """The connected components holding at least ``min_fraction`` of the faces (always the largest).

    Objects with separate parts (a lid, a wheel, a figure's accessory) keep them; floaters, which
    are small, go. Returns the mesh and how many components were kept and dropped.
    """
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh, len(parts), 0
    parts = sorted(parts, key=lambda p: len(p.faces), reverse=True)
    kept = [parts[0]] + [p for p in parts[1:] if len(p.faces) >= min_fraction * len(mesh.faces)]
    import trimesh

    return (trimesh.util.concatenate(kept) if len(kept) > 1 else kept[0]), len(kept), len(parts) - len(kept)
