"""A tiny random-weight UNet laid out as SD-2-depth's (5 input channels: latent + depth) and a schedule."""

from __future__ import annotations

import torch

ALPHAS = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000), 0)  # SD's scaled-linear-like schedule


def tiny_depth_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=5, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=8, norm_num_groups=8).eval()
