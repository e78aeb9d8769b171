"""Deterministic DDIM inversion and sampling for HiFi-123's reference-guided enhancement (library code).

HiFi-123 (RGNV) inverts the reference image and a coarse novel view with DDIM for ``l`` steps, then
denoises both for the same ``l`` steps; its texture refinement (RGSD, the refine stage) stops the
denoising early, at a level τ, and needs the latent and the noise there (:func:`denoise_to`). These
functions do the scheduler maths on any noise predictor ``predict(latents, t) -> noise`` (a UNet with
its depth and text conditions bound), so the maths is testable with a toy predictor. The schedule is
a diffusers ``DDIMScheduler``'s (SD-2-depth ships one); eta is 0.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from img2mesh.generate.scheduler import uniform_timesteps
from img2mesh.utils.ddim import predicted_x0

Predictor = Callable[[torch.Tensor, int], torch.Tensor]


def ddim_timesteps(alphas_cumprod: torch.Tensor, steps: int) -> list[int]:
    """The ``steps`` timesteps of a DDIM schedule, ascending (diffusers' "leading" spacing, offset 1)."""
    return uniform_timesteps(len(alphas_cumprod), steps).tolist()


def _alpha(alphas_cumprod: torch.Tensor, t: Optional[int]) -> torch.Tensor:
    """ᾱ_t; ``None`` is the clean end of the chain (ᾱ = 1, "set_alpha_to_one")."""
    return torch.tensor(1.0) if t is None else alphas_cumprod[t].float()


def ddim_move(x: torch.Tensor, noise: torch.Tensor, alpha_from: torch.Tensor, alpha_to: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM update from noise level ᾱ_from to ᾱ_to with the predicted ``noise``:
    x̂₀ = (x − √(1−ᾱ_from) ε) / √ᾱ_from, then √ᾱ_to x̂₀ + √(1−ᾱ_to) ε (either direction)."""
    alpha_from, alpha_to = alpha_from.to(x), alpha_to.to(x)
    x0 = predicted_x0(x, noise, alpha_from)
    return alpha_to.sqrt() * x0 + (1 - alpha_to).sqrt() * noise


def invert(predict: Predictor, x0: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int,
           inversion_steps: int) -> list[torch.Tensor]:
    """DDIM inversion of the clean latents ``x0`` through the first ``inversion_steps`` of ``steps``.

    Returns the trajectory ``[x0, x_t1, …, x_tl]``. The noise for the move to ``t_k`` is predicted at
    the current latent with timestep ``t_k`` (the usual approximation ε(x_{t_{k-1}}, t_k) ≈ ε(x_{t_k}, t_k),
    exact when the predictor does not depend on the latent).
    """
    timesteps = ddim_timesteps(alphas_cumprod, steps)[:inversion_steps]
    trajectory = [x0]
    previous: Optional[int] = None
    for t in timesteps:
        x = trajectory[-1]
        trajectory.append(ddim_move(x, predict(x, t), _alpha(alphas_cumprod, previous), _alpha(alphas_cumprod, t)))
        previous = t
    return trajectory


def alpha_at_level(alphas_cumprod: torch.Tensor, steps: int, sampling_steps: int, level: int) -> torch.Tensor:
    """ᾱ of the latent ``level`` steps before the clean end of an ``sampling_steps``-step run (level 0: 1)."""
    timesteps = ddim_timesteps(alphas_cumprod, steps)[:sampling_steps]
    return _alpha(alphas_cumprod, timesteps[level - 1] if level > 0 else None)


def denoise_to(predict: Predictor, x_t: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, sampling_steps: int,
               stop: int = 0, on_step: Optional[Callable[[int], None]] = None
               ) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """Deterministic DDIM from the latents at the ``sampling_steps``-th timestep of ``steps`` down to the
    level ``stop`` (0: the clean x₀; k: k steps before the end). Returns the latent there, the noise
    the last step predicted (None when no step ran) and ᾱ at that level.

    ``on_step(k)`` is called before the k-th denoising step (k = 0 first), so an attention controller
    knows which step it is in.
    """
    if not 0 <= stop <= sampling_steps:
        raise ValueError(f"stop level {stop} outside 0..{sampling_steps}")
    timesteps = ddim_timesteps(alphas_cumprod, steps)[:sampling_steps]
    x, noise = x_t, None
    for k, t in enumerate(reversed(timesteps[stop:])):
        if on_step is not None:
            on_step(k)
        position = len(timesteps) - 1 - k
        lower = timesteps[position - 1] if position > 0 else None
        noise = predict(x, t)
        x = ddim_move(x, noise, _alpha(alphas_cumprod, t), _alpha(alphas_cumprod, lower))
    return x, noise, alpha_at_level(alphas_cumprod, steps, sampling_steps, stop)


def sample(predict: Predictor, x_t: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, sampling_steps: int,
           on_step: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Deterministic DDIM from the latents at the ``sampling_steps``-th timestep of ``steps`` down to x₀
    (:func:`denoise_to` to the end)."""
    return denoise_to(predict, x_t, alphas_cumprod, steps, sampling_steps, 0, on_step)[0]
