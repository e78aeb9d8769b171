"""The ``sd2_depth`` section: the diffusion prior that ``enhance`` and ``refine`` share (one model, loaded
once per run), and the self-attention layers where both inject the reference's keys and values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from img2mesh.hifi123.weights import SD2_DEPTH_REPO
from img2mesh.pipeline.config import Section, setting

# What guides the novel views when the user gives no caption: a generic description that asks for
# detail without naming content the photo may not show.
DEFAULT_PROMPT = "a detailed, high quality photo of an object"
FULL_IMAGE_SIZE = 512  # SD-2-depth's resolution
TINY_IMAGE_SIZE = 64  # the tiny random test model's (components.TINY_LATENT x 8)


@dataclass
class SD2DepthConfig(Section):
    """Stable Diffusion 2 depth for HiFi-123's stages (docs/stages.md: enhance, refine)."""

    model: Literal["full", "tiny"] = setting("full", "full: stabilityai/stable-diffusion-2-depth; tiny: for tests")
    random_weights: bool = setting(False, "untrained networks (model: tiny only): tests of the plumbing only")
    hub_repo: str = setting(SD2_DEPTH_REPO, "a Hub model id, or a folder holding the repository's files")
    precision: Literal["auto", "fp32", "fp16"] = setting("auto", "auto: fp16 on CUDA, fp32 on the CPU")
    start_layer: int = setting(12, "first self-attention layer, in forward order, whose novel views read the "
                                   "reference's K/V (HiFi-123's code: 12 of 16)", minimum=0)


def model_size(cfg: SD2DepthConfig) -> int:
    """The model's own image size: SD-2-depth's 512, the tiny test model's 64."""
    return TINY_IMAGE_SIZE if cfg.model == "tiny" else FULL_IMAGE_SIZE


# Keys that lived in ``enhance`` before the model had a section of its own: named in the error a stale
# config file or --set gets.
MOVED_FROM_ENHANCE = {name: f"sd2_depth.{name}" for name in ("model", "random_weights", "hub_repo", "precision",
                                                             "start_layer")}
