"""Masks of views that arrive without alpha (generated views): the background remover's soft alpha.

The official SyncDreamer recipe runs carvekit on every generated view and trains NeuS on its soft
alpha. ``reconstruct.masks`` chooses: ``remover`` always (fetching the weights if needed),
``threshold`` never (white-background threshold), ``auto`` the remover when its weights are on this
machine and the threshold otherwise, with a warning that says how to get the remover's masks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from img2mesh.reconstruct.views import threshold_masks

if TYPE_CHECKING:
    from img2mesh.pipeline.contract import StageContext

log = logging.getLogger("img2mesh")


class RemoverMasks:
    """A :data:`~img2mesh.reconstruct.views.MaskMaker` over the segment stage's background remover.

    The remover comes from the run's model cache, so the segment stage's carvekit is reused (and a
    batch loads it once); nothing is loaded until a folder without alpha needs masks.
    """

    def __init__(self, ctx: "StageContext") -> None:
        self.stage = ctx.stage  # who asks (reconstruct, or enhance for the same masks), for the log
        self.choice = ctx.config.reconstruct.masks
        self.segment = ctx.config.segment
        self.device = ctx.device
        self.models = ctx.models
        self.warned = False  # the threshold fallback is said once per stage, however many folders it masks

    def available(self) -> bool:
        """Whether the remover can run without a download (its weights are here, or untrained ones)."""
        from img2mesh.segment.weights import remover_weights

        try:
            import carvekit  # noqa: F401
        except ImportError:
            return False
        return self.segment.random_weights or all(w.locate() is not None for w in remover_weights())

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, str]:
        if self.choice == "threshold":
            return threshold_masks(images)
        if self.choice == "auto" and not self.available():
            if not self.warned:
                self.warned = True
                log.warning("%s: the views have no alpha and carvekit or its weights are not on this machine, "
                            "so their masks come from the white-background threshold; `img2mesh weights download "
                            "tracer_b7` and `... fba` give the official soft masks (reconstruct.masks=threshold "
                            "silences this)", self.stage)
            return threshold_masks(images)
        from PIL import Image

        from img2mesh.segment.matting import RemoverSettings, get_remover

        settings = RemoverSettings(self.device, self.segment.random_weights, self.segment.seg_size,
                                   self.segment.matting_size)
        remover = get_remover(settings, self.models)
        pictures = [Image.fromarray((im * 255).round().clip(0, 255).astype(np.uint8)) for im in images]
        alphas = [np.asarray(cut)[..., 3].astype(np.float32) / 255.0 for cut in remover(pictures)]
        return np.stack(alphas), "background remover (carvekit)"
