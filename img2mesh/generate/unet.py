"""The SyncDreamer denoiser: diffusers' ``UNet2DConditionModel`` plus SyncDreamer's depth-wise attention.

The official ``DepthWiseAttention`` is an LDM ``UNetModel`` that, after the middle block and
after output blocks 3..11, attends from each pixel over the depth axis of the view's frustum
volume. diffusers groups the LDM output blocks as ``up_blocks[i // 3]`` layer ``i % 3`` (a resnet,
its cross-attention, and the block's upsampler after the last layer), so the forward pass below
walks those layers and applies the depth transformers at the same places.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import torch.nn as nn

from img2mesh.generate.architecture import UNetConfig

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

# LDM output block index -> depth transformer index (needs num_res_blocks = 2 and 4 levels).
OUTPUT_B2C = {3: 0, 4: 1, 5: 2, 6: 3, 7: 4, 8: 5, 9: 6, 10: 7, 11: 8}


class DepthAttention(nn.Module):
    """Softmax over the depth axis per pixel and head: q from 2-D features, k/v from the volume.

    The official code forms k and v with 1x1x1 convolutions and then two (batch, heads, dim, depth,
    h, w) products; at 16 views x 3 guidance branches each of those is 1.2 GB in float32. Both
    convolutions are linear and bias-free, so they fold into the contractions instead:

        score[n, d, p] = sum_c q[n, c, p] (W_k[n] ctx[:, d, p])[c] = (W_k[n]^T q[n, :, p]) . ctx[:, d, p]
        out[n, :, p]   = sum_d attn[n, d, p] W_v[n] ctx[:, d, p] = W_v[n] (sum_d attn[n, d, p] ctx[:, d, p])

    which are matmuls over the depth axis per pixel: nothing of size heads x dim x depth x pixels is
    ever formed, only one pixel-major copy of the context. Same numbers within float32 rounding.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.scale = dim_head**-0.5
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Conv2d(query_dim, inner, 1, 1, bias=False)
        self.to_k = nn.Conv3d(context_dim, inner, 1, 1, bias=False)
        self.to_v = nn.Conv3d(context_dim, inner, 1, 1, bias=False)
        self.to_out = nn.Conv2d(inner, query_dim, 1, 1, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        channels, d = context.shape[1], context.shape[2]
        hn, hd, pixels = self.heads, self.dim_head, h * w
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):  # copy the context once, already in the matmuls' dtype
            context = context.to(torch.get_autocast_dtype(device_type))
        ctx = context.reshape(b, channels, d, pixels).permute(0, 3, 2, 1).contiguous()  # b,p,d,C
        q = self.to_q(x).reshape(b, hn, hd, pixels)
        w_k = self.to_k.weight.reshape(hn, hd, channels)
        w_v = self.to_v.weight.reshape(hn, hd, channels)
        q_ctx = torch.einsum("bncp,ncC->bpnC", q, w_k) * self.scale  # the query in context space
        attn = (q_ctx @ ctx.transpose(-1, -2)).softmax(dim=-1)  # b,p,n,d
        out = torch.einsum("bpnC,ncC->bncp", attn.to(ctx.dtype) @ ctx, w_v)  # b,hn,hd,p
        return self.to_out(out.reshape(b, hn * hd, h, w))


class DepthTransformer(nn.Module):
    """Residual depth-wise attention block (the official layer names, for 1:1 loading)."""

    def __init__(self, dim: int, n_heads: int, d_head: int, context_dim: int) -> None:
        super().__init__()
        inner = n_heads * d_head
        self.proj_in = nn.Sequential(nn.Conv2d(dim, inner, 1, 1), nn.GroupNorm(8, inner), nn.SiLU())
        # ReLU (not SiLU) so that an all-zero volume, as in the unconditional branch, maps to ReLU(bias).
        self.proj_context = nn.Sequential(nn.Conv3d(context_dim, context_dim, 1, 1, bias=False),
                                          nn.GroupNorm(8, context_dim), nn.ReLU())
        self.depth_attn = DepthAttention(inner, context_dim, n_heads, d_head)
        self.proj_out = nn.Sequential(
            nn.GroupNorm(8, inner), nn.ReLU(), nn.Conv2d(inner, inner, 3, 1, 1, bias=False),
            nn.GroupNorm(8, inner), nn.ReLU(), nn.Conv2d(inner, dim, 3, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.depth_attn(self.proj_in(x), self.proj_context(context))
        return self.proj_out(h) + x


def build_base_unet(config: UNetConfig) -> "UNet2DConditionModel":
    """diffusers' SD 1.x UNet with these widths (attention_head_dim is the head count, as in SD)."""
    from diffusers import UNet2DConditionModel

    levels = config.attention_levels
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)),
        block_out_channels=config.block_channels,
        layers_per_block=config.num_res_blocks,
        cross_attention_dim=config.context_dim,
        attention_head_dim=config.num_heads,
        transformer_layers_per_block=config.transformer_depth,
        norm_num_groups=32,
        norm_eps=1e-5,
        flip_sin_to_cos=True,
        freq_shift=0,
        use_linear_projection=False,
    )


class SyncDreamerUNet(nn.Module):
    """``base`` (diffusers UNet) + ``middle_conditions`` + ``output_conditions`` (depth transformers)."""

    def __init__(self, config: UNetConfig, volume_dims: tuple[int, int, int, int]) -> None:
        super().__init__()
        if config.num_res_blocks != 2 or len(config.channel_mult) != 4:
            raise ValueError("SyncDreamer's depth-wise attention needs num_res_blocks 2 and 4 levels")
        self.base = build_base_unet(config)
        mc, mult = config.model_channels, config.channel_mult
        d0, d1, d2, d3 = volume_dims
        self.middle_conditions = DepthTransformer(mc * mult[2], 4, d3 // 2, d3)
        # (channels, volume width) of the nine depth transformers after output blocks 3..11
        placement = [(mult[2], d2), (mult[2], d2), (mult[2], d1), (mult[1], d1), (mult[1], d1),
                     (mult[1], d0), (mult[0], d0), (mult[0], d0), (mult[0], d0)]
        self.output_conditions = nn.ModuleList(
            DepthTransformer(mc * m, 4, d // 2, d) for m, d in placement
        )

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                volume_feats: Optional[dict[int, torch.Tensor]]) -> torch.Tensor:
        """Noise prediction. ``volume_feats`` None bypasses the depth attention (Zero123 mode)."""
        base = self.base
        emb = base.time_embedding(base.time_proj(timesteps).to(x.dtype))
        h = base.conv_in(x)
        skips = [h]
        for block in base.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, res = block(h, temb=emb, encoder_hidden_states=context)
            else:
                h, res = block(h, temb=emb)
            skips.extend(res)
        h = base.mid_block(h, emb, encoder_hidden_states=context)
        if volume_feats is not None:
            h = self.middle_conditions(h, volume_feats[h.shape[-1]])
        index = 0
        for block in base.up_blocks:
            attentions = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                h = resnet(torch.cat([h, skips.pop()], dim=1), emb)
                if attentions is not None:
                    h = attentions[j](h, encoder_hidden_states=context, return_dict=False)[0]
                if j == len(block.resnets) - 1 and block.upsamplers is not None:
                    for upsampler in block.upsamplers:
                        h = upsampler(h)
                if volume_feats is not None and index in OUTPUT_B2C:
                    h = self.output_conditions[OUTPUT_B2C[index]](h, volume_feats[h.shape[-1]])
                index += 1
        return base.conv_out(base.conv_act(base.conv_norm_out(h)))
