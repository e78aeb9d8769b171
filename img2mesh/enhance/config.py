"""The ``enhance`` section of the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from img2mesh.enhance.weights import SD2_DEPTH_REPO
from img2mesh.errors import UsageError
from img2mesh.pipeline.config import Section, setting

# What guides the novel views when the user gives no caption: a generic description that asks for
# detail without naming content the photo may not show.
DEFAULT_PROMPT = "a detailed, high quality photo of an object"
FULL_IMAGE_SIZE = 512  # SD-2-depth's resolution
TINY_IMAGE_SIZE = 64  # the tiny random test model's (components.TINY_LATENT x 8)


def image_size(cfg: "EnhanceConfig") -> int:
    """``enhance.image_size`` resolved: the model's own size for "auto"."""
    if cfg.image_size != "auto":
        return cfg.image_size
    return TINY_IMAGE_SIZE if cfg.model == "tiny" else FULL_IMAGE_SIZE


@dataclass
class EnhanceConfig(Section):
    """HiFi-123's reference-guided novel-view enhancement (docs/stages.md: enhance); off unless ``enabled``."""

    enabled: bool = setting(False, "run the stage (the quality preset turns it on)")
    model: Literal["full", "tiny"] = setting("full", "full: stabilityai/stable-diffusion-2-depth; tiny: for tests")
    random_weights: bool = setting(False, "untrained networks: tests of the plumbing only")
    hub_repo: str = setting(SD2_DEPTH_REPO, "a Hub model id, or a folder holding the repository's files")
    image_size: Union[Literal["auto"], int] = setting("auto", "the views are upscaled to this size and stay at it; "
                                                              "auto: SD-2-depth's 512 (the tiny test model's 64)")
    steps: int = setting(50, "the DDIM schedule (HiFi-123: 50)", minimum=1)
    inversion_steps: int = setting(30, "l: steps inverted, then denoised with injection (HiFi-123: 30)", minimum=1)
    start_step: int = setting(0, "first of the l denoising steps whose novel views read the reference's K/V "
                                 "(0: all of them, as the paper injects)", minimum=0)
    start_layer: int = setting(12, "first self-attention layer, in forward order, that does (HiFi-123's code: 12 "
                                   "of 16)", minimum=0)
    guidance: float = setting(9.0, "classifier-free guidance of the novel views (HiFi-123's code: 9); the "
                                   "reference branch runs unguided")
    prompt: str = setting(DEFAULT_PROMPT, "text guiding the novel views (--prompt; a caption of the object helps); "
                                          "empty: no guidance")
    batch_views: int = setting(4, "(reference, view) pairs per UNet batch; halved on CUDA out-of-memory", minimum=1)
    precision: Literal["auto", "fp32", "fp16"] = setting("auto", "auto: fp16 on CUDA, fp32 on the CPU")

    def validate(self, prefix: str) -> None:
        if self.image_size != "auto" and (self.image_size < 64 or self.image_size % 64):
            raise UsageError(f"config key {prefix}image_size: a multiple of 64 (SD-2-depth: 512), got {self.image_size}")
