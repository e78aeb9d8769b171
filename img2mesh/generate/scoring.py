"""Scoring generated sample sets without reconstructing them, and the contact sheet that shows it.

Two weight-free signals, each in [0, 1]:

* **consistency**: carve a visual hull from the 16 foreground masks at their cameras and measure, per
  view, how much of its silhouette the hull explains (``utils.hull.silhouette_agreement``), times
  the share of the view's border that is background (SyncDreamer frames the whole object with a
  margin, so a silhouette that fills the frame, as noise does, is no object); the mean over views.
  A view of another shape, or a view at the wrong azimuth, carves the others away.
* **input agreement**: the generated view whose camera is nearest the input's, compared with the
  input on white: 1 - mean absolute colour difference over the union of both foregrounds.

``score`` is their mean; ``--select auto`` reconstructs the highest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np

from img2mesh.utils.images import shrink

SCORE_SIZE = 64  # masks and colours are compared at this size: silhouettes, not texture detail


@dataclass
class SampleScore:
    """The scores of one sample set (see the module docstring)."""

    sample: int
    score: float
    consistency: float
    input_agreement: float
    nearest_view: int
    per_view: list[float]

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()} | {
            "per_view": [round(v, 4) for v in self.per_view]}


def foreground(rgb: np.ndarray) -> np.ndarray:
    """Foreground mask of a uint8 view on white (the reconstruct stage's white-background rule)."""
    from img2mesh.utils.images import white_background_mask

    return white_background_mask(rgb.astype(np.float32) / 255.0)


def scale_intrinsics(K: np.ndarray, ratio: float) -> np.ndarray:
    scaled = np.array(K, dtype=np.float64)
    scaled[:2] *= ratio
    return scaled


def border_background(masks: np.ndarray) -> np.ndarray:
    """Per mask (N,H,W bool), the share of its one-pixel border that is background."""
    border = np.concatenate([masks[:, 0], masks[:, -1], masks[:, 1:-1, 0], masks[:, 1:-1, -1]], axis=1)
    return 1.0 - border.mean(axis=1)


def consistency(views: np.ndarray, Ks: np.ndarray, poses: np.ndarray, bound: float) -> np.ndarray:
    """Per-view silhouette agreement of one set of N uint8 views (N,H,W,3) on white, discounted by how
    much of each view's border its silhouette covers."""
    from img2mesh.utils.hull import silhouette_agreement

    size = views.shape[1]
    masks = np.stack([shrink(foreground(v).astype(np.float32), SCORE_SIZE) > 0.5 for v in views])
    small_K = np.stack([scale_intrinsics(K, SCORE_SIZE / size) for K in Ks])
    return silhouette_agreement(masks, small_K, poses, bound) * border_background(masks)


def nearest_view(poses: np.ndarray, input_pose: np.ndarray) -> int:
    """Index of the camera whose viewing direction is closest to the input camera's."""
    forward = poses[:, 2, :3]  # third row of R: the optical axis in world coordinates
    return int(np.argmax(forward @ input_pose[2, :3]))


def input_agreement(view: np.ndarray, input_on_white: np.ndarray, input_mask: np.ndarray) -> float:
    """1 - mean |colour difference| over the union of both foregrounds, at SCORE_SIZE."""
    a = shrink(view.astype(np.float32) / 255.0, SCORE_SIZE)
    b = shrink(input_on_white.astype(np.float32), SCORE_SIZE)
    union = (shrink(foreground(view).astype(np.float32), SCORE_SIZE) > 0.5) | (
        shrink(input_mask.astype(np.float32), SCORE_SIZE) > 0.5)
    if not union.any():
        return 0.0
    return float(1.0 - np.abs(a - b).mean(-1)[union].mean())


def score_samples(samples: np.ndarray, Ks: np.ndarray, poses: np.ndarray, input_on_white: np.ndarray,
                  input_mask: np.ndarray, input_pose: np.ndarray, bound: float,
                  on_set: Optional[Callable[[], None]] = None) -> list[SampleScore]:
    """Scores of S sample sets (S,N,H,W,3 uint8) against the input (H,W,3 float on white, H,W mask);
    the hull is carved inside [-bound, bound]³ (``scene.bound``). ``on_set`` is called after each set."""
    near = nearest_view(poses, input_pose)
    scores = []
    for k, views in enumerate(samples):
        per_view = consistency(views, Ks, poses, bound)
        agree = input_agreement(views[near], input_on_white, input_mask)
        mean = float(per_view.mean())
        scores.append(SampleScore(k, 0.5 * (mean + agree), mean, agree, near, [float(v) for v in per_view]))
        if on_set is not None:
            on_set()
    return scores


def best(scores: list[SampleScore]) -> int:
    """The sample ``--select auto`` reconstructs: the highest score, the lowest index on ties."""
    return max(scores, key=lambda s: (s.score, -s.sample)).sample


def contact_sheet(samples: np.ndarray, scores: list[SampleScore], tile: int = 80) -> np.ndarray:
    """Every set as two rows of views at ``tile`` px with its scores printed underneath."""
    from PIL import Image, ImageDraw

    from img2mesh.utils.images import grid

    columns = math.ceil(samples.shape[1] / 2)
    caption = 18
    rows = []
    winner = best(scores)
    for views, score in zip(samples, scores):
        small = np.stack([np.asarray(Image.fromarray(v).resize((tile, tile), Image.BOX)) for v in views])
        block = Image.new("RGB", (columns * tile, 2 * tile + caption), "white")
        block.paste(Image.fromarray(grid(small, columns)), (0, 0))
        text = (f"sample {score.sample}: score {score.score:.3f}  (consistency {score.consistency:.3f}, "
                f"input {score.input_agreement:.3f}){'  <- best' if score.sample == winner else ''}")
        ImageDraw.Draw(block).text((4, 2 * tile + 3), text, fill=(0, 0, 0))
        rows.append(np.asarray(block))
    return np.concatenate(rows, 0)
