"""Estimating the input camera's elevation from four nearby views (One-2-3-45's idea).

The four views are at relative poses (Δelevation, Δazimuth) = (−10°, 0), (+10°, 0), (0, −10°),
(0, +10°) around the input camera. For a hypothesised input elevation e they sit at
(e + Δe, Δa) on the 1.5-radius sphere looking at the origin; because azimuth turns about the world's
vertical axis, the rig's relative geometry depends on e. Matches of one pair are triangulated with the
hypothesised cameras and reprojected into the views that matched the same keypoints; the
confidence-weighted reprojection error is lowest near the true elevation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from img2mesh.elevation.matching import Matches

RELATIVE_POSES = ((-10.0, 0.0), (10.0, 0.0), (0.0, -10.0), (0.0, 10.0))
MIN_MATCHES = 20  # fewer matches than this over all pairs: the estimate falls back to the default


@dataclass
class Estimate:
    elevation_deg: float
    curve: dict[float, float] = field(default_factory=dict)  # hypothesis -> error (pixels)
    match_counts: dict[str, int] = field(default_factory=dict)
    fallback_reason: Optional[str] = None
    clamped: bool = False


def rig_cameras(elevation_deg: float, image_size: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
    """(K, w2c pose) of the four views for a hypothesised input elevation."""
    from img2mesh.utils.cameras import intrinsics, look_at_pose

    K = intrinsics(image_size)
    return [(K, look_at_pose(math.radians(da), math.radians(elevation_deg + de))) for de, da in RELATIVE_POSES]


def triangulate(P_a: np.ndarray, P_b: np.ndarray, x_a: np.ndarray, x_b: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation of M correspondences: (M,3) world points."""
    rows = np.stack([x_a[:, 0:1] * P_a[2] - P_a[0], x_a[:, 1:2] * P_a[2] - P_a[1],
                     x_b[:, 0:1] * P_b[2] - P_b[0], x_b[:, 1:2] * P_b[2] - P_b[1]], 1)  # M,4,4
    _, _, vt = np.linalg.svd(rows)
    X = vt[:, -1]
    return X[:, :3] / np.where(np.abs(X[:, 3:]) < 1e-12, 1e-12, X[:, 3:])


def project(P: np.ndarray, X: np.ndarray) -> np.ndarray:
    h = X @ P[:, :3].T + P[:, 3]
    return h[:, :2] / np.where(np.abs(h[:, 2:]) < 1e-12, 1e-12, h[:, 2:])


def reprojection_error(matches: dict[tuple[int, int], Matches], elevation_deg: float) -> float:
    """Confidence-weighted mean reprojection error (pixels) of triangulated pair matches in the other views.

    A match (i -> j) is triangulated; every other view k that matched the same keypoint of i
    (within half a pixel) provides the observation to reproject against.
    """
    cams = rig_cameras(elevation_deg)
    P = [K @ pose for K, pose in cams]
    total, weight = 0.0, 0.0
    for (i, j), m_ij in matches.items():
        if len(m_ij) == 0:
            continue
        X = triangulate(P[i], P[j], m_ij.points_a, m_ij.points_b)
        for k in range(len(cams)):
            if k in (i, j):
                continue
            m_ik = matches.get((i, k)) if (i, k) in matches else None
            if m_ik is None or len(m_ik) == 0:
                continue
            # the same keypoint of view i in both matchings
            d = np.linalg.norm(m_ij.points_a[:, None] - m_ik.points_a[None], axis=-1)
            nearest = d.argmin(1)
            same = d[np.arange(len(d)), nearest] < 0.5
            if not same.any():
                continue
            observed = m_ik.points_b[nearest[same]]
            predicted = project(P[k], X[same])
            w = m_ij.confidence[same] * m_ik.confidence[nearest[same]]
            errors = np.minimum(np.linalg.norm(predicted - observed, axis=1), 50.0)  # robust to outliers
            total += float((w * errors).sum())
            weight += float(w.sum())
    return total / weight if weight > 0 else float("inf")


def estimate_elevation(views: list[np.ndarray], masks: list[np.ndarray], matcher: Callable[..., Matches],
                       search: tuple[float, float], default: float, trained: tuple[float, float]) -> Estimate:
    """Coarse (10°) then fine (1°) search of the elevation hypotheses over ``search``."""
    matches: dict[tuple[int, int], Matches] = {}
    counts = {}
    for i in range(len(views)):
        for j in range(len(views)):
            if i != j:
                matches[(i, j)] = matcher(views[i], views[j], masks[i], masks[j])
                if i < j:
                    counts[f"{i}-{j}"] = len(matches[(i, j)])
    if sum(counts.values()) < MIN_MATCHES:
        return Estimate(default, {}, counts, f"too few matches ({sum(counts.values())} < {MIN_MATCHES})")
    lo, hi = search
    curve = {float(e): reprojection_error(matches, e) for e in np.arange(lo, hi + 1e-6, 10.0)}
    best = min(curve, key=curve.get)
    for e in np.arange(max(lo, best - 9), min(hi, best + 9) + 1e-6, 1.0):
        curve.setdefault(float(e), reprojection_error(matches, float(e)))
    best = min(curve, key=curve.get)
    if not np.isfinite(curve[best]):
        return Estimate(default, curve, counts, "no match could be triangulated and checked in another view")
    clamped = min(max(best, trained[0]), trained[1])
    return Estimate(float(clamped), dict(sorted(curve.items())), counts, None, clamped != best)
