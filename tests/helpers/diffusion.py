"""A tiny random-weight UNet laid out as SD-2-depth's (5 input channels: latent + depth) and a schedule."""

from __future__ import annotations

import torch

ALPHAS = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000), 0)  # SD's scaled-linear-like schedule


def tiny_depth_unet() -> torch.nn.Module:
    from img2mesh.hifi123.components import tiny_unet

    torch.manual_seed(0)
    return tiny_unet()
