"""A small vectorised triangle rasteriser in PyTorch (CPU or GPU), for previews and evaluation.

Pixels are sampled at their centres (x + 0.5, y + 0.5), like the renders SyncDreamer was trained
on. Triangles are processed in buckets by the size of their screen bounding box, so each bucket
is one batched barycentric test; a z-buffer keeps the nearest surface (perspective-correct depth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Raster:
    """Per pixel: camera depth (inf where empty), face index (-1 where empty), barycentrics."""

    depth: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.face >= 0


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, pose: torch.Tensor,
              width: int, height: int) -> Raster:
    """Rasterise a mesh (world vertices V,3; faces F,3) seen by camera K (3,3), w2c pose (3,4)."""
    device = vertices.device
    cam = vertices @ pose[:, :3].T + pose[:, 3]
    z = cam[:, 2]
    uv = (cam @ K.T)[:, :2] / z.clamp(min=1e-8)[:, None]
    tri_uv, tri_z = uv[faces], z[faces]  # F,3,2 and F,3
    visible = (tri_z > 1e-4).all(1)
    lo = (tri_uv.min(1).values - 0.5).ceil().long()
    hi = (tri_uv.max(1).values - 0.5).floor().long()
    lo[:, 0].clamp_(min=0)
    lo[:, 1].clamp_(min=0)
    hi[:, 0].clamp_(max=width - 1)
    hi[:, 1].clamp_(max=height - 1)
    span = (hi - lo + 1).clamp(min=0)
    keep = visible & (span > 0).all(1)
    size = span.max(1).values
    depth = torch.full((height * width,), float("inf"), device=device)
    candidates = []
    bucket = 1
    while True:
        sel = keep & (size <= bucket) & (size > bucket // 2 if bucket > 1 else size >= 1)
        ids = sel.nonzero().squeeze(1)
        if ids.numel():
            for chunk in ids.split(max(1, 2_000_000 // (bucket * bucket))):
                candidates.append(_test_pixels(chunk, bucket, lo, tri_uv, tri_z, width, height))
        if bucket >= int(size.max().item() if size.numel() else 0):
            break
        bucket *= 2
    face = torch.full((height * width,), -1, dtype=torch.long, device=device)
    bary = torch.zeros((height * width, 3), device=device)
    if candidates:
        pix = torch.cat([c[0] for c in candidates])
        fid = torch.cat([c[1] for c in candidates])
        dep = torch.cat([c[2] for c in candidates])
        bar = torch.cat([c[3] for c in candidates])
        depth.scatter_reduce_(0, pix, dep, reduce="amin")
        nearest = dep <= depth[pix]
        face[pix[nearest]] = fid[nearest]
        bary[pix[nearest]] = bar[nearest]
    return Raster(depth.view(height, width), face.view(height, width), bary.view(height, width, 3))


def _test_pixels(ids, bucket, lo, tri_uv, tri_z, width, height):
    """Pixels inside triangles ``ids`` among a bucket x bucket window from each bounding-box corner."""
    offsets = torch.stack(torch.meshgrid(torch.arange(bucket, device=ids.device),
                                         torch.arange(bucket, device=ids.device), indexing="xy"), -1).reshape(-1, 2)
    px = lo[ids][:, None, :] + offsets[None]  # n,P,2 integer pixel coordinates
    centre = px.float() + 0.5
    a, b, c = tri_uv[ids, 0][:, None], tri_uv[ids, 1][:, None], tri_uv[ids, 2][:, None]
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    w0 = (b[..., 0] - centre[..., 0]) * (c[..., 1] - centre[..., 1]) - (b[..., 1] - centre[..., 1]) * (c[..., 0] - centre[..., 0])
    w1 = (c[..., 0] - centre[..., 0]) * (a[..., 1] - centre[..., 1]) - (c[..., 1] - centre[..., 1]) * (a[..., 0] - centre[..., 0])
    safe = torch.where(area.abs() < 1e-12, torch.ones_like(area), area)
    l0, l1 = w0 / safe, w1 / safe
    l2 = 1 - l0 - l1
    inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0) & (area.abs() >= 1e-12)
    inside &= (px[..., 0] < width) & (px[..., 1] < height)
    zs = tri_z[ids]
    inv = l0 / zs[:, 0:1] + l1 / zs[:, 1:2] + l2 / zs[:, 2:3]  # perspective-correct: 1/z is affine on screen
    depth = 1.0 / inv
    bary = torch.stack([l0 / zs[:, 0:1], l1 / zs[:, 1:2], l2 / zs[:, 2:3]], -1) * depth[..., None]
    n, P = inside.shape
    pix = (px[..., 1] * width + px[..., 0])[inside]
    fid = ids[:, None].expand(n, P)[inside]
    return pix, fid, depth[inside], bary[inside]


def backproject(raster: Raster, K: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World points (M,3) of the covered pixels of a depth raster."""
    height, width = raster.depth.shape
    ys, xs = np.nonzero(raster.mask.cpu().numpy())
    z = raster.depth.cpu().numpy()[ys, xs]
    pixels = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs, dtype=np.float64)], -1)
    cam = (pixels @ np.linalg.inv(K).T) * z[:, None]
    R, t = pose[:, :3], pose[:, 3]
    return (cam - t) @ R
