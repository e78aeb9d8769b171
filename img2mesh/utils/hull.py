"""Visual hulls from silhouettes at known cameras (numpy only).

Shared by the generate stage's sample scoring (how consistent are 16 generated views?) and the
GSO benchmark's visual-hull baseline. Pixels are indexed by the projection's floor, so a point
projects into the pixel whose centre the corresponding ray passes closest to.
"""

from __future__ import annotations

import numpy as np


def project(points: np.ndarray, K: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer pixel columns, rows and camera depth of world points (N,3) in one view."""
    cam = points @ pose[:, :3].T + pose[:, 3]
    uv = cam @ K.T
    z = cam[:, 2]
    safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
    return np.floor(uv[:, 0] / safe).astype(np.int64), np.floor(uv[:, 1] / safe).astype(np.int64), z


def carves(points: np.ndarray, mask: np.ndarray, K: np.ndarray, pose: np.ndarray,
           outside_carves: bool = True) -> np.ndarray:
    """Whether one view (bool ``mask``) sees each point (N,3) as background (N bool). ``outside_carves``
    False: a point outside the view's frame (or behind it) is not carved (an object the frame cuts)."""
    x, y, z = project(points, K, pose)
    height, width = mask.shape
    ok = (x >= 0) & (y >= 0) & (x < width) & (y < height) & (z > 0)
    seen = ok & mask[y.clip(0, height - 1), x.clip(0, width - 1)]
    return ~seen if outside_carves else ok & ~seen


def background_votes(points: np.ndarray, masks: np.ndarray, Ks: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """How many views see each point (N,3) as background, or not at all (N int)."""
    votes = np.zeros(len(points), np.int32)
    for mask, K, pose in zip(masks, Ks, poses):
        votes += carves(points, mask, K, pose)
    return votes


def inside_all(points: np.ndarray, masks: np.ndarray, Ks: np.ndarray, poses: np.ndarray,
               outside_carves: bool = True) -> np.ndarray:
    """Whether each point projects into the foreground of every mask (N bool). ``outside_carves`` False:
    a view whose frame the point falls outside says nothing about it (an object the frame cuts)."""
    inside = np.ones(len(points), bool)
    for mask, K, pose in zip(masks, Ks, poses):
        inside &= ~carves(points, mask, K, pose, outside_carves)
    return inside


def carve(masks: np.ndarray, Ks: np.ndarray, poses: np.ndarray, resolution: int, bound: float,
          tolerance: int = 0) -> np.ndarray:
    """Occupancy (resolution³ bool, indexed [x, y, z]) of the hull inside [-bound, bound]³.

    ``tolerance`` 0 is the visual hull, the strict intersection of the silhouettes. With ``tolerance``
    k, a cell is carved away only where more than k views see background there: silhouettes that
    disagree a little (a misplaced or eroded one, as generated views have) no longer cut off what the
    other views agree on, at the price of a hull that is fatter where only k views would carve.
    """
    line = np.linspace(-bound, bound, resolution)
    points = np.stack(np.meshgrid(line, line, line, indexing="ij"), -1).reshape(-1, 3)
    if tolerance == 0:
        return inside_all(points, masks, Ks, poses).reshape((resolution,) * 3)
    return (background_votes(points, masks, Ks, poses) <= tolerance).reshape((resolution,) * 3)


def rays_across(pixels: np.ndarray, K: np.ndarray, pose: np.ndarray, bound: float,
                samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For pixel coordinates (N,2: x, y) of one view: the camera centre (3,), the rays' world directions
    (N,3) scaled to one unit of camera depth, and ``samples`` camera depths spanning the cube
    [-bound, bound]³ (a point is ``centre + direction * depth``)."""
    R, t = pose[:, :3], pose[:, 3]
    centre = -R.T @ t
    directions = (np.concatenate([pixels, np.ones((len(pixels), 1))], 1) @ np.linalg.inv(K).T) @ R
    distance = np.linalg.norm(centre)
    radius = bound * np.sqrt(3)
    return centre, directions, np.linspace(max(distance - radius, 1e-3), distance + radius, samples)


def silhouette_agreement(masks: np.ndarray, Ks: np.ndarray, poses: np.ndarray, bound: float,
                         samples: int = 64, slack: int = 0, outside_carves: bool = True,
                         max_rays: int = 0) -> np.ndarray:
    """Per view, the fraction of its foreground pixels whose ray meets the hull of all views.

    Views of one consistent object explain each other's silhouettes (1.0 for exact views); a view
    of another shape, or at the wrong camera, carves the hull away and lowers every view's value.
    The hull is tested exactly along each ray (no voxel grid). ``slack`` pixels: the hull is carved
    by the masks grown by that much, so that a silhouette's own pixel quantisation does not count as
    disagreement (exact views then score 1.0 at any size). ``outside_carves`` False: a view whose frame
    cuts the object does not carve what it cannot see. ``max_rays`` > 0: at most that many of each view's
    foreground pixels, drawn with a fixed seed (the share's standard error stays below 0.01 per view).
    """
    from scipy import ndimage

    carving = masks if slack <= 0 else np.stack([ndimage.binary_dilation(m, iterations=slack) for m in masks])
    agreement = np.zeros(len(masks))
    rng = np.random.default_rng(0)
    for k, (mask, K, pose) in enumerate(zip(masks, Ks, poses)):
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        if 0 < max_rays < rows.size:
            pick = np.sort(rng.choice(rows.size, max_rays, replace=False))
            rows, cols = rows[pick], cols[pick]
        centre, directions, depths = rays_across(np.stack([cols + 0.5, rows + 0.5], -1), K, pose, bound, samples)
        points = centre + directions[:, None, :] * depths[None, :, None]
        hit = inside_all(points.reshape(-1, 3), carving, Ks, poses, outside_carves).reshape(len(rows), samples).any(1)
        agreement[k] = hit.mean()
    return agreement
