"""The ``enhance`` section of the configuration (the model itself: the shared ``sd2_depth`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Union

from img2mesh.errors import UsageError
from img2mesh.hifi123.config import DEFAULT_PROMPT, MOVED_FROM_ENHANCE, SD2DepthConfig, model_size
from img2mesh.pipeline.config import Section, setting


def image_size(cfg: "EnhanceConfig", model: SD2DepthConfig) -> int:
    """``enhance.image_size`` resolved: the model's own size for "auto"."""
    return cfg.image_size if cfg.image_size != "auto" else model_size(model)


@dataclass
class EnhanceConfig(Section):
    """HiFi-123's reference-guided novel-view enhancement (docs/stages.md: enhance); off unless ``enabled``."""

    moved: ClassVar[dict[str, str]] = MOVED_FROM_ENHANCE

    enabled: bool = setting(False, "run the stage (the quality preset turns it on)")
    image_size: Union[Literal["auto"], int] = setting("auto", "the views are upscaled to this size and stay at it; "
                                                              "auto: SD-2-depth's 512 (the tiny test model's 64)")
    steps: int = setting(50, "the DDIM schedule (HiFi-123: 50)", minimum=1)
    inversion_steps: int = setting(30, "l: steps inverted, then denoised with injection (HiFi-123: 30)", minimum=1)
    start_step: int = setting(0, "first of the l denoising steps whose novel views read the reference's K/V "
                                 "(0: all of them, as the paper injects)", minimum=0)
    guidance: float = setting(9.0, "classifier-free guidance of the novel views (HiFi-123's code: 9); the "
                                   "reference branch runs unguided")
    prompt: str = setting(DEFAULT_PROMPT, "text guiding the novel views (--prompt; a caption of the object helps); "
                                          "empty: no guidance")
    batch_views: int = setting(4, "(reference, view) pairs per UNet batch; halved on CUDA out-of-memory", minimum=1)

    def validate(self, prefix: str) -> None:
        if self.image_size != "auto" and (self.image_size < 64 or self.image_size % 64):
            raise UsageError(f"config key {prefix}image_size: a multiple of 64 (SD-2-depth: 512), got {self.image_size}")
