"""The SyncDreamer network (``torch.nn.Module``) built from one :class:`SyncDreamerConfig`.

Parts: diffusers' ``AutoencoderKL`` (``vae``), transformers' CLIP vision tower with projection
(``clip``), SyncDreamer's spatial/frustum volume nets (``spatial_volume``), the denoiser
(``unet``: diffusers' UNet + depth-wise attention), the 256-d time embedding (``time_embed``)
and the 772→768 ``cc_projection``; plus the official buffers (noise schedule and cameras).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from img2mesh.generate.architecture import SyncDreamerConfig
from img2mesh.generate.unet import SyncDreamerUNet
from img2mesh.generate.volume import SpatialVolumeNet
from img2mesh.utils import cameras

if TYPE_CHECKING:
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModelWithProjection

    from img2mesh.generate.config import GenerateConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TARGET_ELEVATION = math.radians(cameras.ELEVATION_DEG)


@dataclass(frozen=True)
class Guidance:
    """How the conditional and unconditional predictions are combined.

    ``cfg``: ``s_uc + w (s - s_uc)`` with everything zeroed in the unconditional branch; w = 1
    runs only the conditional branch. ``harmony`` (HarmonyView): ``s + s1 (s - s_uc1) + s2 (s - s_uc2)``
    with uc1 = no CLIP and no input latent (volume kept) and uc2 = no volume, CLIP kept and the
    input latent multiplied by 4, exactly as the official HarmonyView code builds them.
    """

    kind: str
    scales: tuple[float, ...]

    @classmethod
    def from_config(cls, cfg: "GenerateConfig") -> "Guidance":
        """``generate.guidance`` with its scales (``cfg_scale``, or ``harmony_scales``)."""
        if cfg.guidance == "cfg":
            return cls("cfg", (cfg.cfg_scale,))
        return cls("harmony", tuple(cfg.harmony_scales))

    @property
    def branches(self) -> int:
        if self.kind == "cfg":
            return 1 if self.scales[0] == 1.0 else 2
        return 3


def sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """LDM timestep embedding: ``[cos, sin]`` with ``freq_k = exp(-ln(10000) k / half)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


def build_vae(config: SyncDreamerConfig) -> "AutoencoderKL":
    from diffusers import AutoencoderKL

    c = config.vae
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(c.ch_mult),
        up_block_types=("UpDecoderBlock2D",) * len(c.ch_mult),
        block_out_channels=tuple(c.ch * m for m in c.ch_mult),
        layers_per_block=c.num_res_blocks, latent_channels=c.z_channels, norm_num_groups=32,
        sample_size=config.image_size, scaling_factor=c.scale_factor,
    )


def build_clip(config: SyncDreamerConfig) -> "CLIPVisionModelWithProjection":
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    c = config.clip
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=c.width, intermediate_size=4 * c.width, num_hidden_layers=c.layers,
        num_attention_heads=c.heads, image_size=c.image_size, patch_size=c.patch_size,
        projection_dim=c.embed_dim, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ))


class SyncDreamer(nn.Module):
    """The whole model; see the module docstring. Inference only."""

    def __init__(self, config: SyncDreamerConfig) -> None:
        super().__init__()
        self.config = config
        T = config.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(T, T), nn.SiLU(), nn.Linear(T, T))
        context = config.unet.context_dim
        self.cc_projection = nn.Linear(context + config.viewpoint_dim, context)
        self.vae = build_vae(config)
        self.clip = build_clip(config)
        self.spatial_volume = SpatialVolumeNet(config)
        self.unet = SyncDreamerUNet(config.unet, config.volume_dims)
        self._register_official_buffers()

    def _register_official_buffers(self) -> None:
        c = self.config
        betas = torch.linspace(c.linear_start**0.5, c.linear_end**0.5, c.num_timesteps, dtype=torch.float32) ** 2
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, 0)  # float32, as the official code really computes it
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]], 0)
        posterior_variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
        for name, value in {
            "betas": betas, "alphas": alphas, "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log().clamp(min=-10),
        }.items():
            self.register_buffer(name, value.float())
        K = cameras.intrinsics(c.image_size)
        self.register_buffer("poses", torch.from_numpy(cameras.target_poses(c.view_num).astype(np.float32)))
        self.register_buffer("Ks", torch.from_numpy(np.repeat(K[None], c.view_num, 0).astype(np.float32)))
        wrapped = (cameras.azimuths(c.view_num) + np.pi) % (2 * np.pi) - np.pi
        self.register_buffer("azimuth", torch.from_numpy(wrapped.astype(np.float32)))

    # --- conditioning ---------------------------------------------------------------------

    def vae_moments(self, image: torch.Tensor) -> torch.Tensor:
        """B,3,H,W in [-1,1] -> B,8,h,w posterior moments (mean, log-variance)."""
        return self.vae.quant_conv(self.vae.encoder(image.contiguous()))

    def encode_image(self, image: torch.Tensor, eps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scaled input latent: the posterior mode, or a sample with noise ``eps`` (the official default)."""
        mean, logvar = self.vae_moments(image).chunk(2, dim=1)
        latent = mean if eps is None else mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * eps
        return latent * self.config.vae.scale_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """B,4,h,w scaled latent -> B,3,H,W image in about [-1,1] (not clamped)."""
        return self.vae.decode(latent / self.config.vae.scale_factor).sample

    def clip_preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """B,3,256,256 in [-1,1] -> CLIP input: bicubic (align_corners, no antialias), [0,1], normalised."""
        size = self.config.clip.image_size
        x = F.interpolate(image, size=(size, size), mode="bicubic", align_corners=True)
        x = (x + 1.0) / 2.0
        mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype)[None, :, None, None]
        return (x - mean) / std

    def encode_clip(self, image: torch.Tensor) -> torch.Tensor:
        """B,3,256,256 in [-1,1] -> B,1,768 CLIP image embedding."""
        return self.clip(pixel_values=self.clip_preprocess(image)).image_embeds.unsqueeze(1)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """SyncDreamer's own 256-d time embedding (used by the volume nets)."""
        return self.time_embed(sinusoid(t, self.config.time_embed_dim))

    def viewpoint_embedding(self, elevation: torch.Tensor) -> torch.Tensor:
        """B input elevations (radians, camera above = positive) -> B,N,4 relative viewpoints."""
        d_e = (-TARGET_ELEVATION) - (-elevation)
        d_a = self.azimuth - self.azimuth[0]
        B, N = elevation.shape[0], d_a.shape[0]
        d_e = d_e[:, None].expand(B, N)
        d_a = d_a[None].expand(B, N)
        return torch.stack([d_e, torch.sin(d_a), torch.cos(d_a), torch.zeros_like(d_a)], -1)

    def project_clip(self, clip_embed: torch.Tensor, viewpoint: torch.Tensor) -> torch.Tensor:
        """``cc_projection(cat[clip (768), viewpoint (4)])``: B,1,768 and B,4 -> B,1,768."""
        return self.cc_projection(torch.cat([clip_embed, viewpoint[:, None]], -1))

    def target_view_feats(self, x_input: torch.Tensor, spatial_volume: torch.Tensor, clip_embed: torch.Tensor,
                          t_embed: torch.Tensor, v_embed: torch.Tensor,
                          target_index: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor], torch.Tensor]:
        """Per target view: projected CLIP (B*TN,1,768), frustum features, input latent (B*TN,4,h,w)."""
        B, TN = target_index.shape
        volume_feats, _ = self.spatial_volume.construct_view_frustum_volume(
            spatial_volume, t_embed, v_embed, self.poses, self.Ks, target_index)
        v = v_embed[torch.arange(B, device=v_embed.device)[:, None], target_index].reshape(B * TN, -1)
        clip = clip_embed.unsqueeze(1).expand(-1, TN, -1, -1).reshape(B * TN, 1, -1)
        x_concat = x_input.unsqueeze(1).expand(-1, TN, -1, -1, -1).reshape(B * TN, *x_input.shape[1:])
        return self.project_clip(clip, v), volume_feats, x_concat

    # --- denoising ------------------------------------------------------------------------

    def guided_noise(self, x_t: torch.Tensor, t: torch.Tensor, clip: torch.Tensor,
                     volume: Optional[dict[int, torch.Tensor]], x_concat: torch.Tensor,
                     guidance: Guidance) -> torch.Tensor:
        """Noise prediction with guidance; all branches go through the UNet as one batch."""
        zero = torch.zeros_like
        if guidance.kind == "cfg" and guidance.branches == 1:
            clips, concats, volumes = [clip], [x_concat], [volume]
        elif guidance.kind == "cfg":
            clips, concats = [clip, zero(clip)], [x_concat, zero(x_concat)]
            volumes = [volume, None if volume is None else {k: zero(v) for k, v in volume.items()}]
        elif guidance.kind == "harmony":
            clips, concats = [clip, zero(clip), clip], [x_concat, zero(x_concat), x_concat * 4]
            volumes = [volume, volume, None if volume is None else {k: zero(v) for k, v in volume.items()}]
        else:
            raise ValueError(f"unknown guidance {guidance.kind!r}")
        n = len(clips)
        concat = torch.cat(concats, 0).clone()
        concat[:, :4] = concat[:, :4] / self.config.vae.scale_factor  # the UNet sees the unscaled latent
        unet_in = torch.cat([torch.cat([x_t] * n, 0), concat], 1)
        merged = None if volume is None else {k: torch.cat([v[k] for v in volumes], 0) for k in volume}
        # the branches are combined in float32, whatever precision the UNet ran in
        out = self.unet(unet_in, torch.cat([t] * n, 0), torch.cat(clips, 0), merged).float().chunk(n)
        if n == 1:
            return out[0]
        if guidance.kind == "cfg":
            s, s_uc = out
            return s_uc + guidance.scales[0] * (s - s_uc)
        s, s_uc1, s_uc2 = out
        return s + guidance.scales[0] * (s - s_uc1) + guidance.scales[1] * (s - s_uc2)
