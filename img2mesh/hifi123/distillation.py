"""RGSD's distillation (HiFi-123, Sec. 3.3) as library code: the target a render's latent is pulled to, and
the loss. The optimisation loop around it (what is optimised, the cameras, the schedule) is the refine
stage's (``refine/rgsd.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from img2mesh.hifi123.components import DepthDiffusion
    from img2mesh.hifi123.rgnv import ReferenceBranch, RGNVSettings
    from img2mesh.hifi123.runtime import Prompts


def latent_of(model: "DepthDiffusion", image: torch.Tensor, grad: bool) -> torch.Tensor:
    """The scaled VAE latent of a (1, 3, H, W) image in [0, 1]."""
    return model.encode(image * 2 - 1, grad=grad).float()


def depth_condition(model: "DepthDiffusion", inverse: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """A render's inverse depth (1, 1, h, w at the latent's size; larger is nearer) and coverage as
    SD-2-depth's condition (the background strictly behind)."""
    from img2mesh.hifi123.components import normalise_depth

    return normalise_depth(inverse, covered).to(model.dtype)


def distillation_target(model: "DepthDiffusion", branch: "ReferenceBranch", prompts: "Prompts", depth: torch.Tensor,
                        latent: torch.Tensor, stop: int, settings: "RGNVSettings", split: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x̃_τ, ε̃_τ and ᾱ_τ for a render's (detached) latent at level ``stop``: inverted for l steps with its
    depth condition, denoised with the reference's K/V injected down to ``stop`` (``split``: guidance in
    two UNet calls)."""
    from img2mesh.hifi123.rgnv import denoise_novel, invert_novel
    from img2mesh.hifi123.runtime import alphas

    text, uncond = prompts.text, prompts.uncond
    inverted = invert_novel(model.unet, alphas(model), latent.to(model.dtype), depth, text, settings,
                            model.v_prediction)
    denoised, _ = denoise_novel(model.unet, alphas(model), branch, inverted, depth, text, uncond, settings,
                                model.v_prediction, stop, split)
    noise = denoised.noise if denoised.noise is not None else torch.zeros_like(denoised.latents)
    return denoised.latents.float(), noise.float(), denoised.alpha.float().to(latent.device)


def distillation_loss(z0: torch.Tensor, x_tau: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """‖√ᾱ z₀(θ) + √(1−ᾱ) ε̃ − x̃_τ‖² (mean over the latent); with ᾱ = 1 (τ = 0) an L2 between latents."""
    x_theta = alpha.sqrt() * z0 + (1 - alpha).sqrt() * noise
    return F.mse_loss(x_theta, x_tau)


