"""The papers' reconstruction metric, for two meshes in the same (reconstruction world) frame.

Chamfer distance: depth maps of each mesh at the 16 SyncDreamer cameras, back-projected, merged,
voxel-down-sampled at 0.01, then the mean of the two mean nearest-neighbour distances. Volume IoU:
inside/outside of each mesh on a 64³ grid spanning [-1, 1]³ (world units, no renormalisation).
Colour PSNR: the mesh's bare albedo re-rendered at views' cameras against the views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from img2mesh.utils import cameras
from img2mesh.utils.raster import backproject, rasterize

if TYPE_CHECKING:
    from pathlib import Path

    import trimesh

VOXEL = 0.01
IOU_RESOLUTION = 64


@dataclass(frozen=True)
class Scores:
    chamfer: float
    iou: float
    psnr: Optional[float] = None  # with views: colours re-rendered at their cameras (``render_psnr``)


def surface_points(mesh: "trimesh.Trimesh", size: int = 256) -> np.ndarray:
    """Points of the depth maps at the 16 cameras, voxel-down-sampled at 0.01 (one per voxel)."""
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    K = cameras.intrinsics(size)
    points = []
    for pose in cameras.target_poses():
        raster = rasterize(vertices, faces, torch.tensor(K, dtype=torch.float32),
                           torch.tensor(pose, dtype=torch.float32), size, size)
        points.append(backproject(raster, K, pose))
    merged = np.concatenate(points)
    _, first = np.unique(np.floor(merged / VOXEL).astype(np.int64), axis=0, return_index=True)
    return merged[np.sort(first)]


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    return float((cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()) / 2)


def occupancy(mesh: "trimesh.Trimesh", resolution: int = IOU_RESOLUTION) -> np.ndarray:
    """Inside/outside on the grid by ray parity along each axis, majority of the three (robust to small holes)."""
    line = np.linspace(-1.0, 1.0, resolution)
    triangles = np.asarray(mesh.triangles, dtype=np.float64)
    votes = np.zeros((resolution,) * 3, dtype=np.int32)
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        iu, iv, depth = _column_crossings(triangles, axis, u, v, line)
        # A crossing at `depth` flips inside/outside for every sample above it along the column.
        toggles = np.zeros((resolution, resolution, resolution + 1), dtype=np.int32)
        np.add.at(toggles, (iu, iv, np.searchsorted(line, depth, side="right")), 1)
        inside = (np.cumsum(toggles, axis=2)[..., :resolution] % 2 == 1)  # indexed [u, v, axis]
        order = np.argsort([u, v, axis])
        votes += inside.transpose(order)
    return votes >= 2


def _column_crossings(triangles: np.ndarray, axis: int, u: int, v: int, line: np.ndarray):
    """Grid columns along ``axis`` (indices iu, iv) and where each crosses the surface."""
    n, step = len(line), line[1] - line[0]
    lo = np.ceil((triangles.min(1) - line[0]) / step).astype(np.int64).clip(0, n - 1)
    hi = np.floor((triangles.max(1) - line[0]) / step).astype(np.int64).clip(-1, n - 1)
    span = np.maximum(hi[:, [u, v]] - lo[:, [u, v]] + 1, 0).max(1)
    out_u, out_v, out_d = [], [], []
    bucket = 1
    while bucket // 2 < max(span.max(initial=0), 1):
        ids = np.nonzero((span >= 1) & (span <= bucket) & (span > bucket // 2))[0]
        if len(ids):
            offsets = np.stack(np.meshgrid(np.arange(bucket), np.arange(bucket), indexing="ij"), -1).reshape(-1, 2)
            cu = lo[ids, u][:, None] + offsets[None, :, 0]
            cv = lo[ids, v][:, None] + offsets[None, :, 1]
            gu, gv = line[cu.clip(0, n - 1)], line[cv.clip(0, n - 1)]
            pa, pb, pc = (triangles[ids, k][:, None, :] for k in range(3))
            det = (pb[..., u] - pa[..., u]) * (pc[..., v] - pa[..., v]) - (pc[..., u] - pa[..., u]) * (pb[..., v] - pa[..., v])
            safe = np.where(np.abs(det) < 1e-15, 1.0, det)
            l1 = ((gu - pa[..., u]) * (pc[..., v] - pa[..., v]) - (pc[..., u] - pa[..., u]) * (gv - pa[..., v])) / safe
            l2 = ((pb[..., u] - pa[..., u]) * (gv - pa[..., v]) - (gu - pa[..., u]) * (pb[..., v] - pa[..., v])) / safe
            l0 = 1 - l1 - l2
            # half-open edges so that a column through a shared edge crosses it once
            hit = (l0 >= 0) & (l1 > 0) & (l2 >= 0) & (np.abs(det) >= 1e-15) & (cu < n) & (cv < n)
            depth = l0 * pa[..., axis] + l1 * pb[..., axis] + l2 * pc[..., axis]
            out_u.append(cu[hit])
            out_v.append(cv[hit])
            out_d.append(depth[hit])
        bucket *= 2
    if not out_u:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_u), np.concatenate(out_v), np.concatenate(out_d)


def volume_iou(a: "trimesh.Trimesh", b: "trimesh.Trimesh") -> float:
    occ_a, occ_b = occupancy(a), occupancy(b)
    union = (occ_a | occ_b).sum()
    return float((occ_a & occ_b).sum() / union) if union else 0.0


def evaluate(prediction: "trimesh.Trimesh", ground_truth: "trimesh.Trimesh") -> Scores:
    """CD and IoU of two meshes already in the same (reconstruction world) frame."""
    return Scores(chamfer_distance(surface_points(prediction), surface_points(ground_truth)),
                  volume_iou(prediction, ground_truth))


def render_psnr(mesh: "trimesh.Trimesh", views_dir: "Path") -> float:
    """Mean PSNR (dB) of the mesh's bare albedo (texture or vertex colours, no shading) rendered at
    the views' cameras against the views, both on white: how well the colours were recovered."""
    from img2mesh.errors import UsageError
    from img2mesh.mesh.preview import render
    from img2mesh.reconstruct.views import load_views

    views = load_views(views_dir)
    width, height = views.size
    if width != height:
        raise UsageError(f"--views {views_dir}: the colour check needs square views, got {width}x{height}")
    values = []
    for image, K, pose in zip(views.images, views.Ks, views.poses):
        rendered = render(mesh, K, pose, width, shading=False).astype(np.float64) / 255.0
        mse = float(((rendered - image) ** 2).mean())
        values.append(10 * math.log10(1.0 / max(mse, 1e-10)))
    return float(np.mean(values))
