"""Views degraded like generated ones: the robustness benchmark's input (no model weights needed).

Rendered ground-truth views are perfectly consistent; the views a run reconstructs are SyncDreamer's
(or ``enhance``'s), and each is a little off in its own way. :func:`degrade_views` imitates that on
RGBA renders, per view and seeded, in this order:

1. a small similarity transform about the image centre (shift, rotation, scale): the object is a few
   pixels misplaced, so its silhouette disagrees with the other views';
2. a colour gain per channel on the object: views are recoloured independently;
3. an inconsistent detail: in some views one elliptical region of the object is recoloured or
   re-textured, in that view only;
4. a Gaussian blur of colour and alpha together: decoded views are softer than renders;
5. alpha dropped: the view is composited on white, as generated views arrive.

Level 0 only drops alpha; higher levels are stronger (``LEVELS``; docs/robustness.md says what each
magnitude imitates). The same seed gives the same views, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Degradation:
    """How far each view may be off. Offsets are drawn uniformly in [-max, max] per view."""

    shift_px: float  # max shift along each image axis, in pixels of a 256² view
    rotation_deg: float  # max in-plane rotation about the image centre
    scale: float  # max relative scale change (0.03 = 3 %)
    gain: float  # max relative colour gain per channel on the object
    detail_fraction: float  # share of the views that get one inconsistent detail
    detail_radius: float  # the detail's radius, as a fraction of the object's extent
    blur_sigma: float  # Gaussian blur, in pixels of a 256² view


LEVELS = {
    0: Degradation(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    1: Degradation(1.5, 0.75, 0.015, 0.04, 0.25, 0.10, 0.5),
    2: Degradation(3.0, 1.5, 0.03, 0.08, 0.5, 0.15, 1.0),
    3: Degradation(5.0, 3.0, 0.05, 0.15, 0.75, 0.20, 1.5),
}
TYPICAL_LEVEL = 2  # the level argued to match SyncDreamer's published views (docs/robustness.md)


def degrade_views(rgba: np.ndarray, degradation: Degradation, seed: int) -> np.ndarray:
    """N,H,W,4 uint8 renders -> N,H,W,3 uint8 views on white, each degraded on its own.

    View ``i`` draws from ``numpy.random.default_rng([seed, i])``, so one view's draws do not depend
    on how many others there are.
    """
    if rgba.ndim != 4 or rgba.shape[-1] != 4:
        raise ValueError(f"expected N,H,W,4 RGBA views, got shape {rgba.shape}")
    return np.stack([degrade_view(view, degradation, np.random.default_rng([seed, i]))
                     for i, view in enumerate(rgba)])


def degrade_view(rgba: np.ndarray, degradation: Degradation, rng: np.random.Generator) -> np.ndarray:
    """One H,W,4 uint8 render -> an H,W,3 uint8 view on white (see the module's steps)."""
    d = degradation
    size = rgba.shape[0] / 256.0  # magnitudes are given for 256² views
    values = rgba.astype(np.float64) / 255.0
    # Every draw happens whatever the magnitudes, so levels share their random stream.
    shift = rng.uniform(-1, 1, 2) * d.shift_px * size
    angle = math.radians(rng.uniform(-1, 1) * d.rotation_deg)
    scale = 1.0 + rng.uniform(-1, 1) * d.scale
    gain = 1.0 + rng.uniform(-1, 1, 3) * d.gain
    with_detail = rng.uniform() < d.detail_fraction
    detail_draws = rng.uniform(size=6)
    if shift.any() or angle or scale != 1.0:
        values = _similarity(values, shift, angle, scale)
    rgb, alpha = values[..., :3], values[..., 3]
    rgb = np.clip(rgb * gain, 0.0, 1.0)
    if with_detail and d.detail_radius > 0:
        rgb = _inconsistent_detail(rgb, alpha, d.detail_radius, detail_draws)
    if d.blur_sigma > 0:
        rgb, alpha = _blur_premultiplied(rgb, alpha, d.blur_sigma * size)
    on_white = rgb * alpha[..., None] + (1.0 - alpha[..., None])
    return (on_white * 255.0).round().clip(0, 255).astype(np.uint8)


def _similarity(values: np.ndarray, shift: np.ndarray, angle: float, scale: float) -> np.ndarray:
    """Move the image content by a similarity about the centre (bilinear; empty where it came from outside)."""
    from scipy.ndimage import affine_transform

    height, width = values.shape[:2]
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    cos, sin = math.cos(angle), math.sin(angle)
    forward = scale * np.array([[cos, -sin], [sin, cos]])  # (row, col) -> (row, col) of the output
    inverse = np.linalg.inv(forward)
    offset = centre - inverse @ (centre + shift[::-1])
    out = np.empty_like(values)
    for channel in range(values.shape[-1]):
        out[..., channel] = affine_transform(values[..., channel], inverse, offset, order=1, mode="constant", cval=0.0)
    return out


def _inconsistent_detail(rgb: np.ndarray, alpha: np.ndarray, radius: float, draws: np.ndarray) -> np.ndarray:
    """Recolour (first half of the draws) or re-texture one soft-edged ellipse on the object."""
    rows, cols = np.nonzero(alpha > 0.5)
    if rows.size == 0:
        return rgb
    pick = int(draws[0] * rows.size) % rows.size
    centre = np.array([rows[pick], cols[pick]], dtype=np.float64)
    extent = max(rows.max() - rows.min(), cols.max() - cols.min(), 1)
    axes = radius * extent * np.array([0.6 + 0.8 * draws[1], 0.6 + 0.8 * draws[2]])
    yy, xx = np.mgrid[:rgb.shape[0], :rgb.shape[1]]
    distance = np.sqrt(((yy - centre[0]) / axes[0]) ** 2 + ((xx - centre[1]) / axes[1]) ** 2)
    weight = np.clip((1.2 - distance) / 0.4, 0.0, 1.0)[..., None]  # 1 inside, soft over the last fifth
    if draws[3] < 0.5:  # recoloured: the channels rotated and the brightness moved
        changed = np.roll(rgb, 1 + int(draws[4] * 2), axis=-1) * (0.7 + 0.6 * draws[5])
    else:  # re-textured: stripes of another colour across the region
        period = 3.0 + 6.0 * draws[4]
        stripes = 0.5 + 0.5 * np.sin(2 * math.pi * (yy * math.cos(7 * draws[5]) + xx * math.sin(7 * draws[5])) / period)
        changed = rgb * (0.55 + 0.45 * stripes[..., None]) + (1 - stripes[..., None]) * 0.25 * np.roll(rgb, 1, -1)
    return np.clip(rgb * (1 - weight) + changed * weight, 0.0, 1.0)


def _blur_premultiplied(rgb: np.ndarray, alpha: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Blur colour and alpha together (premultiplied, so no dark fringe), return straight colour."""
    from scipy.ndimage import gaussian_filter

    premultiplied = np.stack([gaussian_filter(rgb[..., c] * alpha, sigma) for c in range(3)], -1)
    blurred_alpha = gaussian_filter(alpha, sigma)
    straight = premultiplied / np.maximum(blurred_alpha[..., None], 1e-6)
    return np.clip(straight, 0.0, 1.0), np.clip(blurred_alpha, 0.0, 1.0)


def view_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / 255.0**2
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)
