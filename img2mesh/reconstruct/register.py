"""Silhouette registration (``reconstruct.register``): each view's camera moved so that every view's
silhouette is explained by the hull of all of them.

Generated views are each a little misplaced in the image: a few pixels of shift, a degree of in-plane
rotation, a few percent of scale. Such a move of the image content about its centre is exactly a change
of that view's camera (the focal length and principal point, and a roll about the optical axis), so it
can be undone before fitting instead of being fitted around.

Silhouette coherence (Hernández, Schmitt & Cipolla, 2007): with the right cameras the visual hull of all
the silhouettes projects onto each silhouette whole; a misplaced view carves away what the others show
and leaves part of its own silhouette unexplained. All views' moves are found together by gradient
descent on the unexplained share of the silhouettes' edge bands: rays through edge pixels, each pixel
explained as far as some point along its ray lies inside every (soft, bilinear) mask, from blurred masks
to sharp ones so that moves of several pixels are found. The measure is one-sided on purpose: the hull
of the *other* views is larger than a view's silhouette wherever they do not pin the object down (its
top and bottom, seen from a ring of cameras), and laying a silhouette onto it (the first version of this
module) pulled views into that excess by up to 2.5 px and 3 % of scale even from the true moves.

What no silhouette can tell is removed from the moves: a small translation of the object or a change of
its size moves every view in a pattern (``gauge_moves``) that is the object's place, not a view's error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from img2mesh.reconstruct.views import Views

STEPS = (40, 40, 40, 40)  # gradient steps per mask blur
BLUR_PX = (6.0, 3.0, 1.5, 0.6)  # the masks' Gaussian blur per stage, in pixels of a 256² view (moves of ~2x that are found)
RAYS = 256  # edge-band rays per view per step
SAMPLES = 32  # points per ray, stratified between where the ray enters and leaves the grown hull
BAND = 0.03  # silhouette pixels this close to the edge (fraction of the width) are the ones a move can unexplain
REACH = 0.05  # the largest move looked for (fraction of the width): the hull bounding the rays is grown by it
HULL_RESOLUTION = 96  # voxels per side of that grown hull (it only bounds where along each ray to look)
LEARNING_RATE = 0.3  # per step, in the moves' units (px of a 256² view, degrees, percent)
PRIOR = 1e-3  # per squared unit, against the unexplained share: a move the silhouettes hardly pin down stays small
UNIT_WIDTH = 256  # shifts are in pixels of a view this wide, whatever the views' size
MAX_SHIFT = 0.04  # the largest correction, as a fraction of the view's width (10 px of a 256² view)
MAX_ROTATION_DEG = 5.0
MAX_LOG_SCALE = 0.08


@dataclass(frozen=True)
class Registration:
    """Per view, the similarity (N,3,3, on pixel coordinates with the image centre at the origin and the
    view's width as the unit) that takes where the given camera puts the object to where the view shows it."""

    moves: np.ndarray
    steps: int  # gradient steps taken
    before: float  # the views' disagreement (``recipe.disagreement``) with the given cameras
    after: float  # and with the moved ones

    def summary(self, width: int) -> dict[str, float]:
        """The moves in words a person can check (pixels of the views' width, degrees, percent)."""
        params = np.array([similarity_params(m) for m in self.moves])
        shift = np.linalg.norm(params[:, :2], axis=1) * width
        return {"register_shift_px_mean": round(float(shift.mean()), 3),
                "register_shift_px_max": round(float(shift.max()), 3),
                "register_rotation_deg_max": round(float(np.degrees(np.abs(params[:, 2]).max())), 3),
                "register_scale_pct_max": round(float(100 * np.abs(np.expm1(params[:, 3])).max()), 3),
                "register_steps": self.steps, "view_disagreement_registered": round(self.after, 4)}


def similarity(dx: float, dy: float, angle: float, log_scale: float) -> np.ndarray:
    """The 3x3 similarity: scale and rotate (radians, image axes: x right, y down) about the origin, then shift."""
    s, c = math.exp(log_scale) * math.sin(angle), math.exp(log_scale) * math.cos(angle)
    return np.array([[c, -s, dx], [s, c, dy], [0.0, 0.0, 1.0]])


def similarity_params(move: np.ndarray) -> tuple[float, float, float, float]:
    """(dx, dy, angle, log scale) of a similarity made by :func:`similarity`."""
    return float(move[0, 2]), float(move[1, 2]), math.atan2(move[1, 0], move[0, 0]), \
        0.5 * math.log(abs(np.linalg.det(move[:2, :2])))


def moved_cameras(Ks: np.ndarray, poses: np.ndarray, moves: np.ndarray, width: int,
                  height: int) -> tuple[np.ndarray, np.ndarray]:
    """Cameras (K N,3,3 and w2c poses N,3,4 for ``width`` x ``height`` views) that project the world
    where the given ones do, then move it by ``moves`` (:class:`Registration`): the scale goes into the
    focal length, the shift into the principal point and the rotation into a roll about the optical axis.
    Needs square pixels without skew (SyncDreamer's cameras and every renderer's)."""
    centre = np.array([width / 2.0, height / 2.0])
    new_Ks, new_poses = Ks.copy(), poses.copy()
    for i, (K, pose, move) in enumerate(zip(Ks, poses, moves)):
        dx, dy, angle, log_scale = similarity_params(move)
        scale = math.exp(log_scale)
        roll = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        principal = K[:2, 2]
        new_Ks[i, 0, 0], new_Ks[i, 1, 1] = K[0, 0] * scale, K[1, 1] * scale
        new_Ks[i, :2, 2] = scale * roll @ (principal - centre) + centre + np.array([dx, dy]) * width
        rotation = np.eye(3)
        rotation[:2, :2] = roll
        new_poses[i] = rotation @ pose
    return new_Ks, new_poses


def register(views: "Views", bound: float, before: Optional[float] = None) -> Optional[Registration]:
    """The moves that make the views' silhouettes coherent (``before``: their disagreement, measured here
    when not given), or None when the cameras cannot take a move (non-square pixels or skew, views that
    are not square) or the moves found did not make the silhouettes agree better."""
    from img2mesh.reconstruct.recipe import disagreement

    Ks = np.asarray(views.Ks, dtype=np.float64)
    poses = np.asarray(views.poses, dtype=np.float64)
    width, height = views.size
    if width != height or not (np.allclose(Ks[:, 0, 0], Ks[:, 1, 1], rtol=1e-6) and np.allclose(Ks[:, 0, 1], 0.0)):
        return None
    before = disagreement(views, bound) if before is None else before
    units = coherent_moves(np.clip(np.asarray(views.masks, dtype=np.float32), 0.0, 1.0), Ks, poses, bound)
    moves = _clipped(np.stack([similarity(*from_units(p)) for p in units]))
    Ks_moved, poses_moved = moved_cameras(Ks, poses, moves, width, height)
    after = disagreement(dataclasses.replace(views, Ks=Ks_moved, poses=poses_moved), bound)
    if after >= before:
        return None
    return Registration(moves, sum(STEPS), before, after)


def from_units(p: np.ndarray) -> tuple[float, float, float, float]:
    """(dx, dy, angle, log scale) of :func:`similarity` from (px of a UNIT_WIDTH view, px, degrees, percent)."""
    return float(p[0]) / UNIT_WIDTH, float(p[1]) / UNIT_WIDTH, math.radians(float(p[2])), float(p[3]) / 100.0


def gauge_moves(Ks: np.ndarray, poses: np.ndarray, width: int) -> np.ndarray:
    """(N*4, 4): the moves of every view (dx, dy in px of a UNIT_WIDTH view, roll in degrees, scale in
    percent; views in order) that a small translation of the object along x, y, z, or a change of its size,
    makes (to first order, for an object about the world origin): moves no silhouette tells apart from
    the object being elsewhere or larger."""
    columns = []
    for axis in range(4):
        column = []
        for K, pose in zip(Ks, poses):
            depth, focal = pose[2, 3], K[0, 0] * UNIT_WIDTH / width
            if axis < 3:
                v = pose[:, axis]  # the world axis in camera coordinates
                column.append([focal * v[0] / depth, focal * v[1] / depth, 0.0, -100.0 * v[2] / depth])
            else:
                column.append([0.0, 0.0, 0.0, 1.0])
        columns.append(np.asarray(column).reshape(-1))
    return np.stack(columns, 1)


def without_gauge(units: np.ndarray, gauge: np.ndarray) -> np.ndarray:
    """The moves (N,4 in units) less their least-squares part along the ``gauge`` moves."""
    flat = units.reshape(-1)
    coefficients = np.linalg.lstsq(gauge, flat, rcond=None)[0]
    return (flat - gauge @ coefficients).reshape(units.shape)


def coherent_moves(masks: np.ndarray, Ks: np.ndarray, poses: np.ndarray, bound: float, seed: int = 0) -> np.ndarray:
    """Per view (N,4): the move (px of a UNIT_WIDTH view, px, degrees, percent) that leaves the least of
    the silhouettes' edge bands unexplained by the hull of all soft ``masks`` (N,H,W in [0, 1]), found by
    Adam from no move, coarse to fine (BLUR_PX), without the gauge moves. Deterministic for a ``seed``."""
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    count, height, width = masks.shape
    px = width / UNIT_WIDTH  # view pixels per unit pixel
    pools, near, far = _edge_rays(masks, Ks, poses, bound)
    sizes = torch.tensor([len(p) for p in pools])
    longest = int(sizes.max())
    if longest == 0:  # no silhouette at all: nothing to lay onto anything
        return np.zeros((count, 4))

    def padded(arrays: list[np.ndarray], shape: tuple[int, ...]) -> "torch.Tensor":
        out = torch.zeros((count, longest, *shape))
        for j, a in enumerate(arrays):
            out[j, :len(a)] = torch.as_tensor(a, dtype=torch.float32).reshape(len(a), *shape)
        return out

    pool_t, near_t, far_t = padded(pools, (2,)), padded(near, ()), padded(far, ())
    K_t = torch.as_tensor(Ks, dtype=torch.float32)
    R_t = torch.as_tensor(poses[:, :, :3], dtype=torch.float32)
    t_t = torch.as_tensor(poses[:, :, 3], dtype=torch.float32)
    origins = -(R_t.transpose(1, 2) @ t_t[..., None])[..., 0]
    centre = torch.tensor([width / 2.0, height / 2.0])
    frame = torch.tensor([float(width), float(height)])
    own = torch.eye(count, dtype=torch.bool)[:, :, None]  # a ray lies inside its own view's mask by construction
    gauge = gauge_moves(Ks, poses, width)
    generator = torch.Generator().manual_seed(seed)
    units = torch.zeros(count, 4, requires_grad=True)
    optimiser = torch.optim.Adam([units], lr=LEARNING_RATE)
    # Adam's steps are about the learning rate whatever the gradient, so the rays' noise would leave the
    # moves jittering by that much: it decays (cosine) to a twentieth over all the steps
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, sum(STEPS), eta_min=LEARNING_RATE / 20)
    for steps, blur in zip(STEPS, BLUR_PX):
        soft = torch.as_tensor(np.stack([ndimage.gaussian_filter(m, blur * px) for m in masks]))[:, None]
        for _ in range(steps):
            angle, scale = torch.deg2rad(units[:, 2]), torch.exp(units[:, 3] / 100.0)
            cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
            linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # N,2,2
            shift = units[:, :2] * px
            pick = (torch.rand(count, RAYS, generator=generator) * sizes[:, None]).long()
            pixels = torch.gather(pool_t, 1, pick[..., None].expand(-1, -1, 2))
            start, end = torch.gather(near_t, 1, pick), torch.gather(far_t, 1, pick)
            shown = F.grid_sample(soft, (pixels / frame * 2 - 1)[:, :, None], align_corners=False,
                                  padding_mode="border")[:, 0, :, 0]
            # where the given camera puts what the moved view shows at each pixel, and that pixel's ray
            given = torch.einsum("nab,nrb->nra", torch.linalg.inv(linear), pixels - centre - shift[:, None]) + centre
            rays = torch.einsum("nab,nrb->nra", torch.linalg.inv(K_t), torch.cat([given, torch.ones_like(given[..., :1])], -1))
            rays = torch.einsum("nba,nrb->nra", R_t, rays)
            fraction = (torch.arange(SAMPLES) + torch.rand(count, RAYS, SAMPLES, generator=generator)) / SAMPLES
            depth = start[..., None] + (end - start)[..., None] * fraction  # z-depths: rays have unit z in the camera
            points = (origins[:, None, None] + rays[:, :, None] * depth[..., None]).reshape(count, -1, 3)
            camera = torch.einsum("kab,npb->knpa", R_t, points) + t_t[:, None, None]
            image = torch.einsum("kab,knpb->knpa", K_t, camera)
            image = image[..., :2] / image[..., 2:].clamp(min=1e-6)
            image = torch.einsum("kab,knpb->knpa", linear, image - centre) + centre + shift[:, None, None]
            inside = F.grid_sample(soft, image / frame * 2 - 1, align_corners=False, padding_mode="border")[:, 0]
            inside = torch.where(own, torch.ones_like(inside), inside).min(0).values  # N,R*S: inside every mask
            explained = inside.reshape(count, RAYS, SAMPLES).max(-1).values
            loss = (shown - torch.minimum(explained, shown)).mean() + PRIOR * (units ** 2).sum() / count
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            with torch.no_grad():
                units.copy_(torch.as_tensor(without_gauge(units.numpy(), gauge), dtype=torch.float32))
    return units.detach().numpy().astype(np.float64)


def _edge_rays(masks: np.ndarray, Ks: np.ndarray, poses: np.ndarray,
               bound: float) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per view: the pixel centres (R,2: x, y) of its edge band (silhouette pixels within BAND of the edge,
    and the soft fringe outside it) whose rays meet the hull of the masks grown by REACH, and the z-depths
    where each ray enters and leaves that hull (a point outside a view's frame is not carved by it)."""
    from scipy import ndimage

    from img2mesh.utils.hull import inside_all, rays_across

    count, height, width = masks.shape
    silhouettes = masks >= 0.5
    band, reach = max(2, round(BAND * width)), max(2, math.ceil(REACH * width))
    grown = np.stack([ndimage.binary_dilation(s, iterations=reach) for s in silhouettes])
    line = np.linspace(-bound, bound, HULL_RESOLUTION)
    grid = np.stack(np.meshgrid(line, line, line, indexing="ij"), -1).reshape(-1, 3)
    hull = inside_all(grid, grown, Ks, poses, outside_carves=False).reshape((HULL_RESOLUTION,) * 3)
    steps = 2 * HULL_RESOLUTION
    pools, near, far = [], [], []
    for mask, silhouette, K, pose in zip(masks, silhouettes, Ks, poses):
        rows, cols = np.nonzero((silhouette & ~ndimage.binary_erosion(silhouette, iterations=band))
                                | ((mask > 0.02) & ~silhouette))
        pixels = np.stack([cols + 0.5, rows + 0.5], 1)
        origin, rays, depths = rays_across(pixels, K, pose, bound, steps)
        cells = np.rint((origin + rays[:, None, :] * depths[None, :, None] + bound)
                        * ((HULL_RESOLUTION - 1) / (2 * bound))).astype(np.int64)
        within = np.all((cells >= 0) & (cells < HULL_RESOLUTION), -1)
        cells = cells.clip(0, HULL_RESOLUTION - 1)
        hit = within & hull[cells[..., 0], cells[..., 1], cells[..., 2]]
        keep = hit.any(1)
        first, last = np.argmax(hit, 1), steps - 1 - np.argmax(hit[:, ::-1], 1)
        step = depths[1] - depths[0]
        pools.append(pixels[keep])
        near.append(np.maximum(depths[first[keep]] - 2 * step, 1e-3))
        far.append(depths[last[keep]] + 2 * step)
    return pools, near, far


def _clipped(moves: np.ndarray) -> np.ndarray:
    out = []
    for move in moves:
        dx, dy, angle, log_scale = similarity_params(move)
        out.append(similarity(float(np.clip(dx, -MAX_SHIFT, MAX_SHIFT)), float(np.clip(dy, -MAX_SHIFT, MAX_SHIFT)),
                              float(np.clip(angle, -math.radians(MAX_ROTATION_DEG), math.radians(MAX_ROTATION_DEG))),
                              float(np.clip(log_scale, -MAX_LOG_SCALE, MAX_LOG_SCALE))))
    return np.stack(out)
