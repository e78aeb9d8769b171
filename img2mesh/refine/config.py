"""The ``refine`` section of the configuration.

The model is the one the shared ``sd2_depth`` section names (loaded once when enhance runs too), and
the reference's K/V are injected from ``sd2_depth.start_layer`` on, as in enhance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from img2mesh.errors import UsageError
from img2mesh.hifi123.config import DEFAULT_PROMPT
from img2mesh.pipeline.config import Section, setting


@dataclass
class RefineConfig(Section):
    """RGSD (docs/stages.md: refine); off unless ``enabled``; numbers are the paper's unless said."""

    enabled: bool = setting(False, "run the stage (the quality preset turns it on)")
    iterations: int = setting(1000, "optimisation steps of the texture (HiFi-123: 1000)", minimum=1)
    steps: int = setting(20, "T: the DDIM schedule of each distillation step (HiFi-123: 20)", minimum=1)
    inversion_steps: int = setting(12, "l: steps inverted, then denoised down to the stop step (HiFi-123: 12)",
                                   minimum=1)
    start_step: int = setting(0, "first of the l denoising steps whose rendered views read the reference's K/V "
                                 "(0: all of them)", minimum=0)
    guidance: float = setting(7.5, "classifier-free guidance of the rendered views (HiFi-123: 7.5)")
    prompt: str = setting(DEFAULT_PROMPT, "text guiding the rendered views (--prompt); empty: no guidance")
    render_size: Union[Literal["auto"], int] = setting("auto", "renders fed to the VAE; auto: SD-2-depth's 512 (the "
                                                               "tiny test model's 64)")
    supersample: Union[Literal["auto"], int] = setting("auto", "rasterise at this many times render_size and average "
                                                               "down, so that the atlas's texels get a gradient; auto: "
                                                               "texture size / render size, 1 to 4", minimum=1)
    learning_rate: float = setting(0.01, "Adam's rate on the texels (colours in 0..1; measured, docs/stages.md)",
                                   minimum=0.0)
    reference_weight: float = setting(1.0, "weight of the photo's own loss at the input camera (pixel MSE)",
                                      minimum=0.0)
    fixed_views: list[int] = setting(factory=lambda: [0, 4, 8, 12], help="SyncDreamer cameras (0..15) whose target "
                                                                       "is one RGNV of the mesh's own render there")
    cameras: int = setting(32, "random cameras (elevation -10..60 degrees, any azimuth) rasterised once and "
                               "drawn from", minimum=1)
    distillation: bool = setting(True, "false: the photo's loss alone (the mechanics benchmark, no diffusion)")
    checkpoint_every: int = setting(100, "iterations between resume checkpoints", minimum=1)

    def validate(self, prefix: str) -> None:
        if any(not 0 <= view < 16 for view in self.fixed_views):
            raise UsageError(f"config key {prefix}fixed_views: SyncDreamer's cameras are 0..15, got {self.fixed_views}")
        if self.render_size != "auto" and (self.render_size < 64 or self.render_size % 64):
            raise UsageError(f"config key {prefix}render_size: a multiple of 64 (SD-2-depth: 512), got "
                             f"{self.render_size}")
