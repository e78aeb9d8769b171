"""HiFi-123's model: Stable Diffusion 2 depth, several files of one Hub repository (enhance, refine)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from img2mesh.utils.weights import HubRepoWeight

if TYPE_CHECKING:
    from img2mesh.pipeline.config import Config
    from img2mesh.utils.weights import WeightFile

SD2_DEPTH_REPO = "stabilityai/stable-diffusion-2-depth"  # sd2_depth.hub_repo's default
# What is loaded from it: every component as safetensors (no pickles), configs, the tokenizer.
SD2_DEPTH_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                   "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                   "text_encoder/model.safetensors", "tokenizer/*", "depth_estimator/config.json",
                   "depth_estimator/model.safetensors", "feature_extractor/preprocessor_config.json",
                   "scheduler/scheduler_config.json")

def sd2_depth_weight(repo_id: str = SD2_DEPTH_REPO) -> HubRepoWeight:
    """Stable Diffusion 2 depth (UNet, VAE, OpenCLIP text encoder, tokenizer, DPT depth, scheduler)."""
    return HubRepoWeight("sd2_depth", "Stable Diffusion 2 depth (CreativeML Open RAIL++-M)",
                         "enhance, refine (enhance.enabled, refine.enabled, the quality preset)", "about 5.5 GB", repo_id,
                         SD2_DEPTH_FILES, "set sd2_depth.hub_repo to a local copy of the repository")


def stage_weights(config: "Config") -> Sequence["WeightFile"]:
    """What ``weights list`` shows for the stages that use it (the Hub repository, whatever
    sd2_depth.hub_repo says)."""
    return [sd2_depth_weight()]
