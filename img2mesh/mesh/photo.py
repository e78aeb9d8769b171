"""The user's photo as a texture source: its camera registered to the mesh's silhouette.

SyncDreamer puts the input camera at azimuth 0, at the estimated elevation, 1.5 from the origin with
the target views' focal length; the mesh made from generated views sits a little off that camera (the
views drift, the elevation is an estimate). Registration renders the mesh's silhouette there and finds
the 2-D similarity (shift, scale, in-plane rotation) and the small elevation correction that best
overlay it on the photo's mask (intersection over union, a pattern search from the masks' moments).
A 2-D similarity about the principal point is an exact change of camera (scale and shift go into K, the
rotation turns the camera about its axis), so the registered photo camera is an ordinary K and pose
that every later use (the bake, ``refine``'s photo loss) projects with.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from img2mesh.utils import cameras
from img2mesh.utils.files import atomic_write_json
from img2mesh.utils.raster import rasterize

PHOTO_CAMERA_FILE = "photo_camera.json"
REGISTER_SIZE = 256  # masks are compared at the generated views' size
MAX_ELEVATION_DEG = 10.0  # the correction searched around the estimate
MAX_SHIFT_PX = 24.0
MAX_ROTATION_DEG = 10.0
MAX_LOG_SCALE = math.log(1.25)


@dataclass
class PhotoCamera:
    """The registered input camera: K for ``size``² images, w2c pose, and what registration found."""

    K: list
    pose: list
    size: int
    elevation_deg: float  # the estimate the run used
    elevation_correction_deg: float
    shift_px: list  # in pixels of a REGISTER_SIZE² image
    scale: float
    rotation_deg: float
    iou_before: float
    iou_after: float

    def at_size(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """K (3,3) for ``size``² images and the w2c pose (3,4)."""
        K = np.asarray(self.K, dtype=np.float64).copy()
        K[:2] *= size / self.size
        return K, np.asarray(self.pose, dtype=np.float64)

    def save(self, folder: Path) -> None:
        atomic_write_json(folder / PHOTO_CAMERA_FILE, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> Optional["PhotoCamera"]:
        """The registration the mesh stage saved in ``folder``, or None."""
        path = folder / PHOTO_CAMERA_FILE
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


def silhouette(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, pose: np.ndarray, size: int,
               device: torch.device) -> np.ndarray:
    """The mesh's coverage (size², bool) at one camera."""
    raster = rasterize(torch.tensor(vertices, dtype=torch.float32, device=device),
                       torch.tensor(faces, dtype=torch.long, device=device),
                       torch.tensor(K, dtype=torch.float32, device=device),
                       torch.tensor(pose, dtype=torch.float32, device=device), size, size)
    return raster.mask.cpu().numpy()


def similarity_matrix(shift: np.ndarray, log_scale: float, rotation: float, centre: float) -> np.ndarray:
    """2x3 affine of x -> s R (x - c) + c + shift (pixel coordinates, c the principal point)."""
    s = math.exp(log_scale)
    R = s * np.array([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
    c = np.array([centre, centre])
    return np.concatenate([R, (c + shift - R @ c)[:, None]], 1)


def warp(mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``mask`` (bool) moved by a 2x3 affine on pixel-centre coordinates."""
    import cv2

    # cv2 maps pixel indices; with centres at +0.5 the same affine needs its offset moved by (A - I)·0.5
    A = matrix[:, :2]
    offset = matrix[:, 2] + (A @ np.full(2, 0.5)) - 0.5
    M = np.concatenate([A, offset[:, None]], 1)
    size = mask.shape[1], mask.shape[0]
    return cv2.warpAffine(mask.astype(np.float32), M, size, flags=cv2.INTER_LINEAR) >= 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def registered_camera(K: np.ndarray, pose: np.ndarray, shift: np.ndarray, log_scale: float,
                      rotation: float) -> tuple[np.ndarray, np.ndarray]:
    """The camera whose image is the similarity-moved image of (K, pose) (K with equal focal lengths)."""
    s = math.exp(log_scale)
    K2 = K.copy()
    K2[0, 0] *= s
    K2[1, 1] *= s
    K2[0, 2] += shift[0]
    K2[1, 2] += shift[1]
    turn = np.array([[math.cos(rotation), -math.sin(rotation), 0], [math.sin(rotation), math.cos(rotation), 0],
                     [0, 0, 1]])
    return K2, turn @ pose


def register_photo(vertices: np.ndarray, faces: np.ndarray, photo_mask: np.ndarray, elevation_deg: float,
                   device: torch.device, search_elevation: bool = True) -> PhotoCamera:
    """Register the mesh's silhouette at the input camera to ``photo_mask`` (REGISTER_SIZE², bool)."""
    size = REGISTER_SIZE
    K = cameras.intrinsics(size)
    centre = size / 2.0
    masks: dict[float, np.ndarray] = {}

    def mesh_mask(correction: float) -> np.ndarray:
        key = round(correction, 3)
        if key not in masks:
            pose = cameras.look_at_pose(0.0, math.radians(elevation_deg + key))
            masks[key] = silhouette(vertices, faces, K, pose, size, device)
        return masks[key]

    def score(p: np.ndarray) -> float:
        shift, log_scale, rotation, correction = p[:2], p[2], math.radians(p[3]), p[4]
        return iou(warp(mesh_mask(correction), similarity_matrix(shift, log_scale, rotation, centre)), photo_mask)

    start = mesh_mask(0.0)
    before = iou(start, photo_mask)
    params = np.zeros(5)  # shift x, shift y, log scale, rotation (degrees), elevation correction (degrees)
    if start.any() and photo_mask.any():  # the masks' moments give the first guess of shift and scale
        params[2] = np.clip(0.5 * math.log(photo_mask.sum() / start.sum()), -MAX_LOG_SCALE, MAX_LOG_SCALE)
        ys, xs = np.nonzero(start)
        py, px = np.nonzero(photo_mask)
        s = math.exp(params[2])
        mesh_centre = np.array([xs.mean(), ys.mean()]) + 0.5
        params[:2] = np.array([px.mean(), py.mean()]) + 0.5 - centre - s * (mesh_centre - centre)
        params[:2] = np.clip(params[:2], -MAX_SHIFT_PX, MAX_SHIFT_PX)
    best = score(params)
    if best < before:
        params, best = np.zeros(5), before
    steps = np.array([2.0, 2.0, 0.02, 1.0, 2.0 if search_elevation else 0.0])
    limits = np.array([MAX_SHIFT_PX, MAX_SHIFT_PX, MAX_LOG_SCALE, MAX_ROTATION_DEG, MAX_ELEVATION_DEG])
    for _ in range(5):  # pattern search, halving the steps when no move helps
        improved = True
        while improved:
            improved = False
            for axis in range(5):
                if steps[axis] == 0:
                    continue
                for sign in (1, -1):
                    trial = params.copy()
                    trial[axis] = np.clip(trial[axis] + sign * steps[axis], -limits[axis], limits[axis])
                    value = score(trial)
                    if value > best + 1e-6:
                        params, best, improved = trial, value, True
                        break
        steps = steps / 2
    pose = cameras.look_at_pose(0.0, math.radians(elevation_deg + params[4]))
    K2, pose2 = registered_camera(K, pose, params[:2], params[2], math.radians(params[3]))
    return PhotoCamera(K2.tolist(), pose2.tolist(), size, float(elevation_deg), round(float(params[4]), 3),
                       [round(float(v), 3) for v in params[:2]], round(math.exp(float(params[2])), 5),
                       round(float(params[3]), 3), round(before, 4), round(best, 4))
