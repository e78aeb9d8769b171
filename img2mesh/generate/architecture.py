"""Every width of the SyncDreamer network in one frozen dataclass, so the full and tiny models are one code.

``SyncDreamerConfig.full()`` is the released model (``configs/syncdreamer.yaml`` with the OpenAI
ViT-L/14 image tower); ``SyncDreamerConfig.tiny()`` is the conformance model with the same
architecture and small widths, used by the tests and the ``generate.model: tiny`` option.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class UNetConfig:
    """The LDM ``UNetModel`` widths (SD 1.x layout) under SyncDreamer's depth-wise attention."""

    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    num_heads: int = 8
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    in_channels: int = 8
    out_channels: int = 4
    context_dim: int = 768
    transformer_depth: int = 1

    @property
    def block_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def attention_levels(self) -> tuple[bool, ...]:
        """Which resolution levels carry cross-attention (downsampling factor in attention_resolutions)."""
        return tuple(2**level in self.attention_resolutions for level in range(len(self.channel_mult)))


@dataclass(frozen=True)
class VAEConfig:
    """The LDM ``AutoencoderKL`` ddconfig widths."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    scale_factor: float = 0.18215


@dataclass(frozen=True)
class CLIPVisionConfig:
    """The OpenAI CLIP ``VisionTransformer`` widths (ViT-L/14 for the real model)."""

    width: int = 1024
    layers: int = 24
    heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    embed_dim: int = 768


@dataclass(frozen=True)
class SyncDreamerConfig:
    """The whole network: UNet, VAE, CLIP image tower, spatial/frustum volumes, embeddings."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    clip: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    volume_dims: tuple[int, int, int, int] = (64, 128, 256, 512)
    view_num: int = 16
    image_size: int = 256
    time_embed_dim: int = 256
    viewpoint_dim: int = 4
    target_encoder_run_dim: int = 16
    target_encoder_out_dim: int = 16
    frustum_volume_depth: int = 48
    spatial_volume_size: int = 32
    spatial_volume_length: float = 0.5
    frustum_volume_length: float = 0.86603
    origin_depth: float = 1.5
    num_timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012

    @property
    def latent_size(self) -> int:
        return self.image_size // 8

    @classmethod
    def full(cls) -> "SyncDreamerConfig":
        """The released SyncDreamer model."""
        return cls()

    @classmethod
    def tiny(cls) -> "SyncDreamerConfig":
        """The conformance widths: same architecture, 4.6 M parameters."""
        return cls(
            unet=UNetConfig(model_channels=32, channel_mult=(1, 1, 1, 1), num_heads=4),
            vae=VAEConfig(ch=32, ch_mult=(1, 1, 2, 1), num_res_blocks=1),
            clip=CLIPVisionConfig(width=128, layers=2, heads=2),
            volume_dims=(8, 16, 24, 32),
        )

    @classmethod
    def named(cls, name: str) -> "SyncDreamerConfig":
        """``full`` or ``tiny``."""
        return {"full": cls.full, "tiny": cls.tiny}[name]()

    @classmethod
    def from_conformance_json(cls, path: Path) -> "SyncDreamerConfig":
        """Read the widths of a conformance ``config.json`` (official config layout)."""
        data: dict[str, Any] = json.loads(Path(path).read_text())
        unet = data["unet_config"]["params"]
        ddconfig = data["first_stage_model"]["ddconfig"]
        clip = data["clip_image_encoder"]["clip_model_args"]
        volume = data["spatial_volume"]
        return cls(
            unet=UNetConfig(
                model_channels=unet["model_channels"], channel_mult=tuple(unet["channel_mult"]),
                num_res_blocks=unet["num_res_blocks"], num_heads=unet["num_heads"],
                attention_resolutions=tuple(unet["attention_resolutions"]),
                in_channels=unet["in_channels"], out_channels=unet["out_channels"],
                context_dim=unet["context_dim"], transformer_depth=unet["transformer_depth"],
            ),
            vae=VAEConfig(ch=ddconfig["ch"], ch_mult=tuple(ddconfig["ch_mult"]),
                          num_res_blocks=ddconfig["num_res_blocks"], z_channels=ddconfig["z_channels"],
                          scale_factor=data["first_stage_model"]["scale_factor"]),
            clip=CLIPVisionConfig(width=clip["vision_width"], layers=clip["vision_layers"],
                                  heads=data["clip_image_encoder"]["vision_heads"],
                                  patch_size=clip["vision_patch_size"], image_size=clip["image_resolution"],
                                  embed_dim=clip["embed_dim"]),
            volume_dims=tuple(unet["volume_dims"]),
            view_num=data["fixed"]["view_num"],
            image_size=data["fixed"]["image_size"],
            time_embed_dim=data["fixed"]["time_embed_dim"],
            viewpoint_dim=data["fixed"]["viewpoint_dim"],
            target_encoder_run_dim=volume["NoisyTargetViewEncoder"]["run_dim"],
            target_encoder_out_dim=volume["NoisyTargetViewEncoder"]["output_dim"],
            frustum_volume_depth=volume["frustum_volume_depth"],
            spatial_volume_size=volume["spatial_volume_size"],
            spatial_volume_length=volume["spatial_volume_length"],
            frustum_volume_length=volume["frustum_volume_length"],
            origin_depth=volume["default_origin_depth"],
            num_timesteps=data["fixed"]["num_timesteps"],
            linear_start=data["fixed"]["linear_start"],
            linear_end=data["fixed"]["linear_end"],
        )
