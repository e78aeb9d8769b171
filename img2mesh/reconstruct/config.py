"""The ``reconstruct`` section of the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from img2mesh.errors import UsageError
from img2mesh.neus.keys import FieldKeys
from img2mesh.pipeline.config import setting


@dataclass
class ReconstructConfig(FieldKeys):
    """How a field is fitted to the views (its kind and widths: ``neus.keys.FieldKeys``)."""

    steps: int = setting(2000, "training steps", minimum=1)
    rays_per_step: int = setting(4096, "rays per training step", minimum=1)
    sampler: Literal["auto", "dense", "occupancy"] = setting("auto", "auto: dense on every device for now")
    grid_resolution: int = setting(128, "occupancy grid cells per side", minimum=1)
    march_steps: int = setting(1024, "occupancy sampler: marching steps across the bounding cube's diagonal",
                               minimum=1)
    warmup_steps: int = setting(200, "linear learning-rate warm-up (at most a quarter of the steps)", minimum=1)
    image_size: int = setting(0, "resize the views for training (0 = as they are)", minimum=0)
    view_input: Literal["direction", "reflected"] = setting("reflected", "the colour network's view input: the ray "
                                                                         "direction, or it reflected about the normal "
                                                                         "(official)")
    adapt: bool = setting(True, "measure how much the views' silhouettes disagree before fitting: views that agree "
                                "(renders) get the accurate recipe (l1, no margin, no appearance codes, fixed "
                                "cameras, strict hull), others the levers below as set")
    register: bool = setting(True, "views whose silhouettes disagree: move each view's camera (shift, roll, focal "
                                   "length) until all the silhouettes agree, before fitting; views that agree then "
                                   "get the accurate recipe (with adapt)")
    init: Literal["sphere", "hull", "feedback"] = setting("hull", "start from NeuS's sphere, fitted to the masks' "
                                                                  "visual hull, or to generate's last feedback fit")
    init_steps: int = setting(300, "hull start: SDF-fitting steps before training (points only, no rendering)",
                              minimum=1)
    hull_variance: float = setting(0.5, "hull start: NeuS's variance when training starts (inv_s = e^(10 v); the "
                                        "sphere keeps NeuS's blurry 0.3)", minimum=0.0, maximum=1.0)
    hull_tolerance: int = setting(0, "hull start: a cell is carved away only where more than this many views see "
                                     "background (0: the strict intersection of the silhouettes)", minimum=0)
    masks: Literal["auto", "remover", "threshold"] = setting("auto", "masks of views without alpha: carvekit "
                                                                     "(remover), the white threshold, or auto")
    color_loss: Literal["l1", "soft_l1"] = setting("soft_l1", "colour term: L1 per channel, or the official soft-L1 "
                                                         "(sqrt(|error|^2 + 0.001) per ray)")
    mask_loss: Literal["bce", "mse"] = setting("bce", "mask term against the soft masks (official: mse)")
    mask_margin: int = setting(2, "pixels along each silhouette left out of the mask term (a few pixels of "
                                  "disagreement there cost nothing)", minimum=0)
    mask_weight: float = setting(1.0, "mask term weight (official: 1.0 x mse against 0.5 x soft-L1 colour)",
                                 minimum=0.0)
    eikonal_weight: float = setting(0.1, "eikonal regulariser weight", minimum=0.0)
    curvature_weight: float = setting(0.05, "normal smoothness, hash-grid field only", minimum=0.0)
    appearance_dim: int = setting(8, "per-view appearance code width fed to the colour network (NeRF-W); the "
                                     "texture uses the mean code; 0: off", minimum=0)
    pose_refine: bool = setting(True, "learn a small rotation and translation per view (after a warm-up, held "
                                       "near zero)")
    checkpoint_every: int = setting(500, "steps between resume checkpoints", minimum=1)
    select: Union[Literal["auto", "all"], int] = setting("auto", "sample set to reconstruct: auto (best score), K "
                                                                 "or all")

    def validate(self, prefix: str) -> None:
        if isinstance(self.select, int) and self.select < 0:
            raise UsageError(f"config key {prefix}select: a sample index must be 0 or more, got {self.select}")
