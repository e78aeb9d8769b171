"""The blending step of 3D-aware feedback during sampling (Ouroboros3D, training-free form).

At a feedback step, the 3D model's renders replace part of the sampler's clean-view prediction x̂₀
where they cover the object, and DDIM continues from the blended x̂₀: the noise prediction is
re-derived from it, so the sampler stays the same DDIM. This module is that operator; fitting the
3D model to x̂₀ and rendering it (issue 15) is not built yet.
"""

from __future__ import annotations

import torch

from img2mesh.utils.ddim import noise_for, predicted_x0


def blend_noise(x_t: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, renders: torch.Tensor,
                coverage: torch.Tensor, weight: float) -> torch.Tensor:
    """The noise prediction after blending the encoded ``renders`` into x̂₀ with ``weight`` where
    ``coverage`` (in [0, 1], broadcast over the latent channels) says the render shows the object.

    ``weight == 0`` returns ``noise`` itself (bit-identical to no feedback, no round trip).
    """
    if weight == 0:
        return noise
    alpha = alpha.to(x_t)
    x0 = predicted_x0(x_t, noise, alpha)
    blended = x0 + weight * coverage.to(x0) * (renders.to(x0) - x0)
    return noise_for(x_t, blended, alpha)
