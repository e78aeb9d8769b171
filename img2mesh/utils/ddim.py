"""The two DDIM identities that relate a noisy latent, its noise and its clean prediction."""

from __future__ import annotations

import torch


def predicted_x0(x_t: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """x̂₀ = (x_t − √(1−ᾱ) ε) / √ᾱ."""
    return (x_t - (1 - alpha).sqrt() * noise) / alpha.sqrt()


def noise_for(x_t: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The ε that makes DDIM predict ``x0`` from ``x_t``: (x_t − √ᾱ x̂₀) / √(1−ᾱ)."""
    return (x_t - alpha.sqrt() * x0) / (1 - alpha).sqrt()
