"""Silhouette registration (``reconstruct.register``): each view's camera moved so that its silhouette
agrees with what the other views carve.

Generated views are each a little misplaced in the image: a few pixels of shift, a degree of in-plane
rotation, a few percent of scale. Such a move of the image content about its centre is exactly a change
of that view's camera (the focal length and principal point, and a roll about the optical axis), so it
can be undone before fitting instead of being fitted around. Silhouette coherence (Hernández, Schmitt &
Cipolla, 2007): for every view, the hull of all *other* views is projected into it and the similarity
that best lays the view's own silhouette onto that projection (soft IoU, Powell's method) is composed
into its camera; a few rounds, all views against the same hulls, the mean move removed after each round
(a move every view shares is the object's own size or place, not a view's error). A round is kept only
when it lowers the views' disagreement (``recipe.disagreement``); when it does not, the next round lays
the views onto a looser hull (a cell kept unless more than one, then two, other views carve it), since
views far off carve away what the others should be laid onto.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from img2mesh.reconstruct.views import Views

SIZE = 192  # silhouettes are registered at this size (or the views' own, when smaller)
RESOLUTION = 160  # voxels per side of the hulls the silhouettes are laid onto
COARSE = 4  # fine cells per coarse cell (per side) when the hulls are found coarse to fine
BAND = 0.04  # the band of pixels along each silhouette the IoU is measured on (fraction of the size; the largest move)
ROUNDS = 4  # rounds tried at most
MAX_TOLERANCE = 2  # how many of the other views may see background in a kept cell, when the strict hull fails
PRIOR = 1e-4  # per squared pixel of the registration size, degree and percent of scale, against 1 - IoU
MAX_SHIFT = 0.04  # the largest correction, as a fraction of the view's width (10 px of a 256² view)
MAX_ROTATION_DEG = 5.0
MAX_LOG_SCALE = 0.08


@dataclass(frozen=True)
class Registration:
    """Per view, the similarity (N,3,3, on pixel coordinates with the image centre at the origin and the
    view's width as the unit) that takes where the given camera puts the object to where the view shows it."""

    moves: np.ndarray
    rounds: int  # rounds tried
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
                "register_rounds": self.rounds, "view_disagreement_registered": round(self.after, 4)}


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


def register(views: "Views", bound: float, before: Optional[float] = None,
             rounds: int = ROUNDS) -> Optional[Registration]:
    """The moves that make the views' silhouettes coherent (``before``: their disagreement, measured here
    when not given), or None when the cameras cannot take a move (non-square pixels or skew, views that
    are not square) or no move made the silhouettes agree better."""
    from scipy import ndimage

    from img2mesh.reconstruct.recipe import disagreement
    from img2mesh.utils.images import shrink

    Ks = np.asarray(views.Ks, dtype=np.float64)
    width, height = views.size
    if width != height or not (np.allclose(Ks[:, 0, 0], Ks[:, 1, 1], rtol=1e-6) and np.allclose(Ks[:, 0, 1], 0.0)):
        return None
    size = min(SIZE, width)
    masks = np.stack([shrink(m, size) for m in views.masks]).clip(0.0, 1.0)
    silhouettes = masks >= 0.5
    band_px = max(2, round(BAND * size))
    # Only pixels near a silhouette's edge can change under a small move: the rest count once, as they are.
    bands = np.stack([ndimage.binary_dilation(s, iterations=band_px) & ~ndimage.binary_erosion(s, iterations=band_px)
                      for s in silhouettes])
    small_Ks = Ks * np.array([size / width, size / width, 1.0])[None, :, None]
    best = disagreement(views, bound) if before is None else before
    start = best
    moves = np.repeat(np.eye(3)[None], len(masks), 0)
    tolerance, tried = 0, 0
    while tried < rounds:
        tried += 1
        cam_Ks, cam_poses = moved_cameras(small_Ks, views.poses, moves, size, size)
        hulls = LeaveOneOutHulls(silhouettes, cam_Ks, cam_poses, bound, tolerance)
        candidate, largest = _laid_onto(hulls, masks, silhouettes, bands, moves)
        Ks_moved, poses_moved = moved_cameras(Ks, views.poses, candidate, width, height)
        measured = disagreement(dataclasses.replace(views, Ks=Ks_moved, poses=poses_moved), bound)
        # kept when the views agree better (or as well, on the strict hull: the measure's own steps are
        # coarser than the moves near the end); the next round lays them onto a stricter hull again
        if measured < best or (measured == best and tolerance == 0):
            moves, best, tolerance = candidate, measured, max(tolerance - 1, 0)
            if largest < 0.05:  # under a twentieth of a pixel: converged
                break
        elif tolerance < MAX_TOLERANCE:  # far-off views carved away what the others are laid onto
            tolerance += 1
        else:
            break
    if best >= start:
        return None
    return Registration(moves, tried, start, best)


def _laid_onto(hulls: "LeaveOneOutHulls", masks: np.ndarray, silhouettes: np.ndarray, bands: np.ndarray,
               moves: np.ndarray) -> tuple[np.ndarray, float]:
    """One round: each view's move composed with the similarity that best lays its mask onto the hull of
    the others (soft IoU on its edge band, Powell's method), less the mean move; and the largest shift (px)."""
    from scipy import ndimage, optimize

    size = masks.shape[-1]
    centre = np.full(2, (size - 1) / 2.0)  # index coordinates: pixel centres at integers
    moves = moves.copy()
    largest = 0.0
    for i in range(len(masks)):
        rows, cols = np.nonzero(bands[i])
        target = hulls.project(i, rows, cols)
        if not target.any():
            continue
        inner = float((silhouettes[i] & ~bands[i]).sum())  # inside both, away from the edge
        pixels = np.stack([rows, cols]).astype(np.float64)

        so_far = np.array(similarity_params(moves[i])) * [size, size, 180 / math.pi, 100]

        def mismatch(p: np.ndarray, mask: np.ndarray = masks[i], target: np.ndarray = target,
                     pixels: np.ndarray = pixels, inner: float = inner, so_far: np.ndarray = so_far) -> float:
            # the view's mask read through the move: where the render shows x, the view shows move(x)
            move = similarity(p[0], p[1], math.radians(p[2]), p[3] / 100)
            matrix = move[:2, :2][::-1, ::-1]  # (row, col) order
            moved = matrix @ (pixels - centre[:, None]) + (centre + move[:2, 2][::-1])[:, None]
            seen = ndimage.map_coordinates(mask, moved, order=1, mode="constant", cval=0.0)
            iou = (np.minimum(seen, target).sum() + inner) / max(np.maximum(seen, target).sum() + inner, 1e-6)
            # small moves are likelier: a move the silhouette hardly pins down (a box's roll) stays small
            return 1.0 - iou + PRIOR * float(((so_far + p) ** 2).sum())

        found = optimize.minimize(mismatch, np.zeros(4), method="Powell",
                                  options={"xtol": 1e-3, "ftol": 1e-7, "maxfev": 400})
        step = similarity(found.x[0] / size, found.x[1] / size, math.radians(found.x[2]), found.x[3] / 100)
        moves[i] = step @ moves[i]
        largest = max(largest, float(np.abs(found.x[:2]).max()))
    return _clipped(_without_shared_move(moves)), largest


class LeaveOneOutHulls:
    """For every view, the hull (RESOLUTION³ cells) of all the *other* views' silhouettes, found coarse to
    fine: the cells of a coarse grid that the masks, grown by a coarse cell, carve away hold no fine cell
    of any of these hulls."""

    def __init__(self, silhouettes: np.ndarray, Ks: np.ndarray, poses: np.ndarray, bound: float,
                 tolerance: int = 0) -> None:
        from scipy import ndimage

        self.Ks, self.poses, self.bound, self.tolerance = Ks, poses, bound, tolerance
        coarse = RESOLUTION // COARSE
        cell_px = 2 * bound / coarse * float(Ks[:, 0, 0].max()) / _nearest_depth(poses, bound)
        grown = np.stack([ndimage.binary_dilation(s, iterations=int(math.ceil(cell_px))) for s in silhouettes])
        keep = _background(_cell_centres(coarse, bound), grown, Ks, poses).sum(0) <= 1 + tolerance
        fine = np.arange(RESOLUTION).reshape(coarse, COARSE)  # fine indices of each coarse cell, per axis
        cx, cy, cz = np.nonzero(keep.reshape((coarse,) * 3))
        index = (fine[cx][:, :, None, None] * RESOLUTION ** 2 + fine[cy][:, None, :, None] * RESOLUTION
                 + fine[cz][:, None, None, :]).reshape(-1)
        line = np.linspace(-bound, bound, RESOLUTION)
        ix, iy, iz = np.unravel_index(index, (RESOLUTION,) * 3)
        self.index = index
        self.background = _background(np.stack([line[ix], line[iy], line[iz]], -1), silhouettes, Ks, poses)
        self.votes = self.background.sum(0)

    def project(self, view: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether the ray through each pixel (``rows``, ``cols``) of ``view`` meets the hull of the others."""
        hull = np.zeros(RESOLUTION ** 3, bool)
        hull[self.index] = self.votes - self.background[view] <= self.tolerance
        hull = hull.reshape((RESOLUTION,) * 3)
        K, pose, bound = self.Ks[view], self.poses[view], self.bound
        R, t = pose[:, :3], pose[:, 3]
        origin = -R.T @ t
        pixels = np.stack([cols + 0.5, rows + 0.5, np.ones(len(rows))], -1)
        dirs = (pixels @ np.linalg.inv(K).T) @ R
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        distance = float(np.linalg.norm(origin))
        radius = bound * math.sqrt(3)
        steps = 2 * RESOLUTION  # half a cell apart across the cube's diagonal
        depths = np.linspace(max(distance - radius, 1e-3), distance + radius, steps).astype(np.float32)
        seen = np.zeros(len(rows), bool)
        scale = (RESOLUTION - 1) / (2 * bound)
        for chunk in range(0, len(rows), 2048):
            points = origin.astype(np.float32) + dirs[chunk:chunk + 2048, None, :].astype(np.float32) * depths[None, :, None]
            cells = np.rint((points + bound) * scale).astype(np.int32)
            inside = np.all((cells >= 0) & (cells < RESOLUTION), -1)
            cells = cells.clip(0, RESOLUTION - 1)
            seen[chunk:chunk + 2048] = (inside & hull[cells[..., 0], cells[..., 1], cells[..., 2]]).any(1)
        return seen.astype(np.float64)


def _nearest_depth(poses: np.ndarray, bound: float) -> float:
    """The smallest camera-to-cube depth (the largest a cell can look)."""
    distances = np.linalg.norm(np.einsum("nji,nj->ni", poses[:, :, :3], poses[:, :, 3]), axis=1)
    return max(float(distances.min()) - bound * math.sqrt(3), 1e-3)


def _cell_centres(resolution: int, bound: float) -> np.ndarray:
    line = -bound + (np.arange(resolution) + 0.5) * (2 * bound / resolution)
    return np.stack(np.meshgrid(line, line, line, indexing="ij"), -1).reshape(-1, 3)


def _background(points: np.ndarray, silhouettes: np.ndarray, Ks: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Per view and point (N,P bool), whether the view sees background there (float32 projections: the
    hulls are rebuilt every round). A point outside a view's frame is not carved by it."""
    from img2mesh.utils.hull import carves

    points = points.astype(np.float32)
    return np.stack([carves(points, mask, K.astype(np.float32), pose.astype(np.float32), outside_carves=False)
                     for mask, K, pose in zip(silhouettes, Ks, poses)])


def _without_shared_move(moves: np.ndarray) -> np.ndarray:
    """The moves less their mean (shift, rotation and log scale): what every view shares is not an error."""
    params = np.array([similarity_params(m) for m in moves])
    mean = params.mean(0)
    return np.stack([similarity(*(p - mean)) for p in params])


def _clipped(moves: np.ndarray) -> np.ndarray:
    out = []
    for move in moves:
        dx, dy, angle, log_scale = similarity_params(move)
        out.append(similarity(float(np.clip(dx, -MAX_SHIFT, MAX_SHIFT)), float(np.clip(dy, -MAX_SHIFT, MAX_SHIFT)),
                              float(np.clip(angle, -math.radians(MAX_ROTATION_DEG), math.radians(MAX_ROTATION_DEG))),
                              float(np.clip(log_scale, -MAX_LOG_SCALE, MAX_LOG_SCALE))))
    return np.stack(out)
