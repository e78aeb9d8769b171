"""SyncDreamer's 16 target cameras (``meta_info/camera-16.pkl``), computed rather than unpickled.

World +z is up; view i sits at azimuth 22.5°·i counter-clockwise from +x, elevation 30°,
distance 1.5, looking at the origin. Poses are world-to-camera ``[R|t]`` with OpenCV axes
(x right, y down, z forward); K has fx = fy = 280 and cx = cy = 128 for 256×256 images.
"""

from __future__ import annotations

import math

import numpy as np

VIEW_COUNT = 16
ELEVATION_DEG = 30.0
DISTANCE = 1.5
FOCAL = 280.0
IMAGE_SIZE = 256


def intrinsics(image_size: int = IMAGE_SIZE) -> np.ndarray:
    """3x3 K for square images of this size (scaled from the 256-pixel original)."""
    ratio = image_size / IMAGE_SIZE
    return np.array([[FOCAL * ratio, 0, IMAGE_SIZE / 2 * ratio], [0, FOCAL * ratio, IMAGE_SIZE / 2 * ratio],
                     [0, 0, 1]], dtype=np.float64)


def look_at_pose(azimuth: float, elevation: float, distance: float = DISTANCE) -> np.ndarray:
    """World-to-camera 3x4 pose of a camera on the sphere looking at the origin, +z up."""
    centre = distance * np.array([math.cos(elevation) * math.cos(azimuth),
                                  math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return np.concatenate([rotation, -rotation @ centre[:, None]], 1)


def azimuths(count: int = VIEW_COUNT) -> np.ndarray:
    """Azimuths in radians, 0 .. 2π."""
    return np.arange(count) * (2 * math.pi / count)


def target_poses(count: int = VIEW_COUNT, elevation_deg: float = ELEVATION_DEG) -> np.ndarray:
    """N,3,4 world-to-camera poses of the target views."""
    return np.stack([look_at_pose(a, math.radians(elevation_deg)) for a in azimuths(count)])


def cameras_record(poses: np.ndarray, K: np.ndarray, input_elevation_deg: float) -> dict:
    """The ``cameras.json`` a stage writes next to views at these cameras."""
    return {
        "convention": "world-to-camera [R|t], OpenCV axes (x right, y down, z forward), world +z up",
        "image_size": IMAGE_SIZE,
        "K": np.asarray(K).tolist(),
        "poses": np.asarray(poses).tolist(),
        "azimuths_deg": [round(math.degrees(a), 6) for a in azimuths(len(poses))],
        "elevations_deg": [ELEVATION_DEG] * len(poses),
        "distance": DISTANCE,
        "input_elevation_deg": input_elevation_deg,
    }
