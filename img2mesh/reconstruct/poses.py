"""Per-view camera refinement (``reconstruct.pose_refine``): a small learned correction per view.

Generated views are each a little misplaced (a few pixels of shift, a degree of rotation, a few
percent of scale). Instead of bending the surface to fit every misplaced view, each view gets a
rotation about its camera centre (axis-angle) and a translation of that centre, both starting at
zero, learned with the field after a warm-up (the surface must first exist for the colours to say
which way a camera is off) and held near zero by an L2 penalty (BARF / NeuS2-style refinement).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def axis_angle_to_matrix(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of axis-angle vectors (..., 3) (Rodrigues), smooth at zero."""
    theta2 = (w * w).sum(-1, keepdim=True)[..., None]  # ...,1,1
    theta = (theta2 + 1e-12).sqrt()
    zero = torch.zeros_like(w[..., 0])
    K = torch.stack([zero, -w[..., 2], w[..., 1], w[..., 2], zero, -w[..., 0], -w[..., 1], w[..., 0], zero],
                    -1).reshape(*w.shape[:-1], 3, 3)
    small = theta2 < 1e-8  # Taylor terms near zero: sin(t)/t ~ 1 - t^2/6, (1 - cos t)/t^2 ~ 1/2 - t^2/24
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-12))
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(K)
    return eye + a * K + b * (K @ K)


class PoseCorrection(nn.Module):
    """One rotation (about the camera centre) and one translation per view, world frame, zero at start."""

    def __init__(self, views: int) -> None:
        super().__init__()
        self.rotation = nn.Parameter(torch.zeros(views, 3))
        self.translation = nn.Parameter(torch.zeros(views, 3))

    def forward(self, origins: torch.Tensor, dirs: torch.Tensor, view_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays (R,3) of views ``view_ids`` (R,) moved with their view's correction."""
        rotations = axis_angle_to_matrix(self.rotation)[view_ids]  # R,3,3
        return origins + self.translation[view_ids], (rotations @ dirs[..., None])[..., 0]

    def penalty(self) -> torch.Tensor:
        """Sum of squares of every correction (radians and world units)."""
        return (self.rotation ** 2).sum() + (self.translation ** 2).sum()

    def summary(self, distance: float, focal_px: float) -> dict[str, float]:
        """The corrections in words a person can check: mean and largest rotation (degrees) and
        translation (world units, and pixels at the object's distance for this focal length)."""
        with torch.no_grad():
            degrees = self.rotation.norm(dim=-1) * (180.0 / torch.pi)
            shift = self.translation.norm(dim=-1)
        return {"pose_rotation_deg_mean": round(float(degrees.mean()), 4),
                "pose_rotation_deg_max": round(float(degrees.max()), 4),
                "pose_shift_px_mean": round(float(shift.mean()) / distance * focal_px, 3),
                "pose_shift_px_max": round(float(shift.max()) / distance * focal_px, 3)}
