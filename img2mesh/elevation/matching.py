"""Feature matches between two views of the object, restricted to its foreground.

``sift``: OpenCV SIFT with Lowe's ratio test (no weights; the test path). ``loftr``: kornia's LoFTR
with its outdoor weights, fetched by kornia's own loader (an offline failure becomes our message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

RATIO = 0.75


@dataclass
class Matches:
    """Pixel coordinates (M,2) in both views and a confidence per match."""

    points_a: np.ndarray
    points_b: np.ndarray
    confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.points_a)


def _grey(image: np.ndarray) -> np.ndarray:
    return (image[..., :3].astype(np.float32) @ [0.299, 0.587, 0.114]).clip(0, 255).astype(np.uint8)


def sift_matches(image_a: np.ndarray, image_b: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray) -> Matches:
    """SIFT keypoints inside the masks, matched with the ratio test; confidence = 1 - ratio."""
    import cv2

    sift = cv2.SIFT_create()
    kp_a, desc_a = sift.detectAndCompute(_grey(image_a), mask_a.astype(np.uint8) * 255)
    kp_b, desc_b = sift.detectAndCompute(_grey(image_b), mask_b.astype(np.uint8) * 255)
    empty = Matches(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))
    if desc_a is None or desc_b is None or len(kp_a) < 2 or len(kp_b) < 2:
        return empty
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc_a, desc_b, k=2)
    good = [(m, n) for m, n in (p for p in pairs if len(p) == 2) if m.distance < RATIO * n.distance]
    if not good:
        return empty
    a = np.array([kp_a[m.queryIdx].pt for m, _ in good])
    b = np.array([kp_b[m.trainIdx].pt for m, _ in good])
    confidence = np.array([1.0 - m.distance / max(n.distance, 1e-6) for m, n in good])
    return Matches(a, b, confidence)


def loftr_matches(image_a: np.ndarray, image_b: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray,
                  matcher: "torch.nn.Module", device: str = "cpu", size: int = 480) -> Matches:
    """kornia LoFTR matches (``matcher``: ``loftr_weight(variant).load(device)``), kept where both ends
    lie on the foreground. Both views are matched as ``size``² grey images (One-2-3-45: 480²) and the
    keypoints come back in the views' own pixels."""
    import cv2
    import torch

    def to_tensor(image: np.ndarray) -> "torch.Tensor":
        grey = cv2.resize(_grey(image), (size, size), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(grey / 255.0).float()[None, None].to(device)

    with torch.inference_mode():
        out = matcher({"image0": to_tensor(image_a), "image1": to_tensor(image_b)})
    # pixel centres map onto pixel centres: x_view + 0.5 = (x_size + 0.5) * view / size
    scale_a = np.array([image_a.shape[1], image_a.shape[0]]) / size
    scale_b = np.array([image_b.shape[1], image_b.shape[0]]) / size
    a = (out["keypoints0"].cpu().numpy() + 0.5) * scale_a - 0.5
    b = (out["keypoints1"].cpu().numpy() + 0.5) * scale_b - 0.5
    conf = out["confidence"].cpu().numpy()
    keep = mask_a[a[:, 1].astype(int).clip(0, mask_a.shape[0] - 1), a[:, 0].astype(int).clip(0, mask_a.shape[1] - 1)] & \
        mask_b[b[:, 1].astype(int).clip(0, mask_b.shape[0] - 1), b[:, 0].astype(int).clip(0, mask_b.shape[1] - 1)]
    return Matches(a[keep], b[keep], conf[keep])
