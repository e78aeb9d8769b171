"""What the fit really used, saved beside the field so that later stages can project the views onto the
surface: the views themselves (``views.npz``: colours and masks at their native size) and the cameras
after pose refinement with each view's colour correction (``cameras.json``).

A view's colour correction is the affine map (3x4, on RGB in [0, 1]) that takes what the field renders
with that view's appearance code to what it renders with the mean code (the look the texture should
have): fitted by least squares at the view's own surface points, held towards the identity. Without
appearance codes every correction is the identity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from img2mesh.errors import StageError
from img2mesh.utils.files import atomic_write_json

if TYPE_CHECKING:
    import torch

    from img2mesh.reconstruct.fields import NeuSField
    from img2mesh.reconstruct.poses import PoseCorrection
    from img2mesh.reconstruct.renderer import RenderSettings
    from img2mesh.reconstruct.views import Views

CAMERAS_FILE = "cameras.json"
VIEWS_FILE = "views.npz"
CORRECTION_PIXELS = 512  # surface points per view the colour correction is fitted on
CORRECTION_RIDGE = 0.05  # pull towards the identity, per point (a view that sees little stays as it is)


@dataclass
class FittedViews:
    """The views a field was fitted to, at their native size, with the fitted cameras.

    images (N,H,W,3 float in [0,1] on white), masks (N,H,W float in [0,1]), Ks (N,3,3 for this size),
    poses (N,3,4 world-to-camera after refinement), colour corrections (N,3,4).
    """

    images: np.ndarray
    masks: np.ndarray
    Ks: np.ndarray
    poses: np.ndarray
    colour: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        """Camera centres (N,3) in world units."""
        return -np.einsum("nji,nj->ni", self.poses[:, :, :3], self.poses[:, :, 3])

    def corrected(self, index: int) -> np.ndarray:
        """View ``index``'s colours with its correction applied (H,W,3 float, clipped to [0, 1])."""
        affine = self.colour[index]
        return np.clip(self.images[index] @ affine[:, :3].T + affine[:, 3], 0.0, 1.0)


def refined_poses(poses: np.ndarray, correction: Optional["PoseCorrection"]) -> np.ndarray:
    """World-to-camera poses (N,3,4) with ``PoseCorrection``'s rotation about each camera centre and
    translation of it applied (the cameras the rays were cast from at the end of training)."""
    if correction is None:
        return poses.copy()
    import torch

    from img2mesh.reconstruct.poses import axis_angle_to_matrix

    with torch.no_grad():
        rotations = axis_angle_to_matrix(correction.rotation.detach().double().cpu()).numpy()
        shifts = correction.translation.detach().double().cpu().numpy()
    out = np.empty_like(poses)
    for i, pose in enumerate(poses):
        R, t = pose[:, :3], pose[:, 3]
        centre = -R.T @ t + shifts[i]
        # a ray's world direction d = R^T d_cam turns into rotation_i d: the new R is R rotation_i^T
        R_new = R @ rotations[i].T
        out[i] = np.concatenate([R_new, (-R_new @ centre)[:, None]], 1)
    return out


def colour_corrections(field: "NeuSField", views: "Views", poses: np.ndarray, render: "RenderSettings",
                       device: "torch.device", seed: int, pixels: int = CORRECTION_PIXELS) -> np.ndarray:
    """Per view (N,3,4): the affine map from the field's colours with that view's appearance code to its
    colours with the mean code, at up to ``pixels`` of the view's object pixels (identity without codes)."""
    import torch
    import torch.nn.functional as F

    from img2mesh.reconstruct.renderer import render_rays
    from img2mesh.reconstruct.views import pixel_rays

    count = len(views.images)
    identity = np.tile(np.eye(3, 4), (count, 1, 1))
    if not field.config.appearance_dim:
        return identity
    rng = np.random.default_rng(seed)
    width, height = views.size
    out = identity.copy()
    for i in range(count):
        ys, xs = np.nonzero(views.masks[i] >= 0.5)
        if len(ys) < 16:
            continue
        pick = rng.choice(len(ys), min(pixels, len(ys)), replace=False)
        origin, dirs = pixel_rays(views.Ks[i], poses[i], width, height)
        d = torch.tensor(dirs[ys[pick], xs[pick]], dtype=torch.float32, device=device)
        o = torch.tensor(origin, dtype=torch.float32, device=device).expand_as(d)
        with torch.no_grad():
            out_mean = render_rays(field, o, d, render)
            weights = out_mean["weights"]
            opacity = weights.sum(-1, keepdim=True).clamp(min=1e-6)
            surface = (weights[..., None] * out_mean["points"]).sum(1) / opacity
        seen = (out_mean["opacity"] > 0.5).cpu().numpy()
        if seen.sum() < 16:
            continue
        _, features, grad = field.sdf_and_gradient(surface, create_graph=False)
        normal = F.normalize(grad, dim=-1)
        ids = torch.full((len(d),), i, dtype=torch.long, device=device)
        with torch.no_grad():
            own = field.color(surface, normal, d, features.detach(), ids).double().cpu().numpy()[seen]
            mean = field.color(surface, normal, d, features.detach()).double().cpu().numpy()[seen]
        out[i] = fit_affine(own, mean, CORRECTION_RIDGE)
    return out


def fit_affine(source: np.ndarray, target: np.ndarray, ridge: float) -> np.ndarray:
    """The 3x4 map A minimising |A [source, 1] - target|² + ridge·n·|A - [I 0]|² (n: the point count)."""
    X = np.concatenate([source, np.ones((len(source), 1))], 1)  # n,4
    prior = np.eye(3, 4)
    lam = ridge * len(source)
    lhs = X.T @ X + lam * np.eye(4)
    rhs = X.T @ target + lam * prior.T
    return np.linalg.solve(lhs, rhs).T


def save_fitted(folder: Path, views: "Views", poses: np.ndarray, colour: np.ndarray,
                given: Optional[np.ndarray] = None) -> None:
    """Write ``views.npz`` (uint8 colours and masks at the views' size) and ``cameras.json`` (``given``: the
    poses as the views came, before registration; default the views' own)."""
    import io

    from img2mesh.utils.files import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=(views.images * 255).round().clip(0, 255).astype(np.uint8),
                        masks=(views.masks * 255).round().clip(0, 255).astype(np.uint8))
    atomic_write_bytes(folder / VIEWS_FILE, buffer.getvalue())
    width, height = views.size
    atomic_write_json(folder / CAMERAS_FILE, {
        "convention": "world-to-camera [R|t], OpenCV axes (x right, y down, z forward), world +z up; "
                      "K per view for views.npz's size; K and poses after reconstruct's registration and pose "
                      "refinement; "
                      "colour: per view, the 3x4 affine map from its colours to the mean look",
        "image_size": [int(width), int(height)],
        "K": np.asarray(views.Ks).tolist(),
        "poses": np.asarray(poses).tolist(),
        "poses_given": np.asarray(views.poses if given is None else given).tolist(),
        "colour": np.asarray(colour).round(6).tolist(),
    })


def load_fitted(folder: Path) -> Optional[FittedViews]:
    """The views and fitted cameras saved beside a field, or None for a field saved before they were."""
    cameras_path, views_path = folder / CAMERAS_FILE, folder / VIEWS_FILE
    if not cameras_path.is_file() or not views_path.is_file():
        return None
    try:
        record = json.loads(cameras_path.read_text())
        with np.load(views_path, allow_pickle=False) as data:  # never unpickle: plain arrays or nothing
            images = data["images"].astype(np.float32) / 255.0
            masks = data["masks"].astype(np.float32) / 255.0
        fitted = FittedViews(images, masks, np.asarray(record["K"], dtype=np.float64),
                             np.asarray(record["poses"], dtype=np.float64), np.asarray(record["colour"], dtype=np.float64))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StageError(f"{folder}: the fitted views are unreadable ({exc}); re-run reconstruct") from None
    count = len(fitted.images)
    if not (fitted.masks.shape == fitted.images.shape[:3] and fitted.Ks.shape == (count, 3, 3)
            and fitted.poses.shape == (count, 3, 4) and fitted.colour.shape == (count, 3, 4)):
        raise StageError(f"{folder}: {CAMERAS_FILE} does not match {VIEWS_FILE}; re-run reconstruct")
    return fitted
