"""DDIM exactly as SyncDreamer's ``SyncDDIMSampler``.

Not diffusers' ``DDIMScheduler``: the official sampler differs in ways that change the numbers
(timesteps ``range(0, 1000, 1000 // S) + 1``, ``alphas_prev[0] = alphas_cumprod[0]`` rather than 1,
sigma computed in float64, a 1e-7 clamp in the direction term, and sigma still used in that term
on the last step, where no noise is added).

Step counts that do not divide 1000 keep the stride ``1000 // steps`` and take exactly ``steps``
steps (the official code would run a different number of steps, or fail, for those).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch


def uniform_timesteps(total: int, steps: int) -> np.ndarray:
    """``steps`` timesteps of a ``total``-step model, ascending, stride ``total // steps``, offset 1.

    The official range(0, total, stride) + 1, cut to exactly ``steps`` values: identical when steps
    divides 1000; otherwise the official code takes extra steps or indexes past 999. It is also
    diffusers' "leading" spacing with ``steps_offset: 1`` (Stable Diffusion's scheduler configs).
    """
    stride = total // steps
    return np.arange(0, stride * steps, stride) + 1


class DDIMSchedule:
    """The DDIM sub-schedule of ``steps`` uniform steps over the model's ``alphas_cumprod``."""

    def __init__(self, alphas_cumprod: torch.Tensor, steps: int, eta: float = 1.0) -> None:
        alphas_cumprod = alphas_cumprod.detach().float().cpu()
        self.timesteps = uniform_timesteps(alphas_cumprod.shape[0], steps)
        index = torch.from_numpy(self.timesteps.astype(np.int64))
        alphas = alphas_cumprod[index].double()
        alphas_prev = torch.cat([alphas_cumprod[0:1], alphas_cumprod[index[:-1]]], 0)
        sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
        self.sigmas = sigmas.float()
        self.alphas = alphas.float()
        self.alphas_prev = alphas_prev.float()
        self.sqrt_one_minus_alphas = torch.sqrt(1.0 - self.alphas).float()

    def __len__(self) -> int:
        return len(self.timesteps)

    def step(self, x: torch.Tensor, noise_pred: torch.Tensor, index: int,
             noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x_t -> x_{t-1} at DDIM ``index``; ``noise`` (standard normal) is None on the last step."""
        def at(values: torch.Tensor) -> torch.Tensor:
            return values[index].to(device=x.device, dtype=torch.float32)

        a_t, a_prev, sigma = at(self.alphas), at(self.alphas_prev), at(self.sigmas)
        pred_x0 = (x - at(self.sqrt_one_minus_alphas) * noise_pred) / a_t.sqrt()
        direction = torch.clamp(1.0 - a_prev - sigma**2, min=1e-7).sqrt() * noise_pred
        x_prev = a_prev.sqrt() * pred_x0 + direction
        if noise is not None:
            x_prev = x_prev + sigma * noise
        return x_prev
