"""Sampling 16 synchronized views (and single Zero123 views) from a SyncDreamer model.

Random numbers come from a ``randn(shape)`` callable drawn in the official order (input-latent
posterior noise, x_T, then one draw per step but the last), so a seeded ``torch.Generator``
reproduces runs and the conformance tests can replay the official draws.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import torch

from img2mesh.generate.model import Guidance, SyncDreamer
from img2mesh.generate.precision import Precision, float32_region
from img2mesh.generate.scheduler import DDIMSchedule
from img2mesh.utils.device import halving_on_out_of_memory

if TYPE_CHECKING:
    from img2mesh.generate.config import GenerateConfig

log = logging.getLogger("img2mesh")
RandN = Callable[[tuple[int, ...]], torch.Tensor]
# Called after every noise prediction: (0-based step, x_t, noise, ᾱ_t) -> the noise DDIM continues with.
Feedback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplerSettings:
    """Everything that shapes a sampling run besides the input and the random numbers."""

    guidance: Guidance
    steps: int
    eta: float
    batch_views: int
    input_latent: str  # "sample" (official) or "mode"

    @classmethod
    def from_config(cls, cfg: "GenerateConfig") -> "SamplerSettings":
        """The run's ``generate.*`` settings."""
        return cls(Guidance.from_config(cfg), cfg.steps, cfg.eta, cfg.batch_views, cfg.input_latent)


def seeded_randn(seed: int, device: torch.device) -> RandN:
    """A ``randn(shape)`` drawing from one generator seeded with ``seed`` on ``device``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=generator, device=device)


class ViewBatcher:
    """Runs the UNet over views in chunks, halving the chunk on CUDA out-of-memory."""

    def __init__(self, batch_views: int) -> None:
        self.batch_views = batch_views

    def noise(self, model: SyncDreamer, x: torch.Tensor, t: torch.Tensor, x_input: torch.Tensor,
              clip_embed: torch.Tensor, v_embed: torch.Tensor, guidance: Guidance) -> torch.Tensor:
        """Guided noise for all N views of x (B,N,4,h,w) at timestep t (B,)."""
        t_embed = model.embed_time(t)
        volume = model.spatial_volume.construct_spatial_volume(x, t_embed, v_embed, model.poses, model.Ks)

        def chunks(batch_views: int) -> torch.Tensor:
            return self._chunks(model, x, t, x_input, clip_embed, v_embed, t_embed, volume, guidance, batch_views)

        noise, self.batch_views = halving_on_out_of_memory(chunks, self.batch_views, 1, lambda size: log.warning(
            "generate: CUDA out of memory; retrying with batch_views = %d", size))
        return noise

    def _chunks(self, model: SyncDreamer, x: torch.Tensor, t: torch.Tensor, x_input: torch.Tensor,
                clip_embed: torch.Tensor, v_embed: torch.Tensor, t_embed: torch.Tensor, volume: torch.Tensor,
                guidance: Guidance, batch_views: int) -> torch.Tensor:
        B, N = x.shape[:2]
        outputs = []
        for start in range(0, N, batch_views):
            views = torch.arange(start, min(start + batch_views, N), device=x.device)
            VN = len(views)
            clip, volume_feats, x_concat = model.target_view_feats(
                x_input, volume, clip_embed, t_embed, v_embed, views[None].expand(B, -1))
            noise = model.guided_noise(x[:, start:start + VN].flatten(0, 1), t.repeat_interleave(VN), clip,
                                       volume_feats, x_concat, guidance)
            outputs.append(noise.view(B, VN, *noise.shape[1:]))
        return torch.cat(outputs, 1)


def _denoise(schedule: DDIMSchedule, x: torch.Tensor, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             randn: RandN, precision: Precision, on_step: Optional[Callable[[int], None]] = None,
             feedback: Optional[Feedback] = None) -> torch.Tensor:
    """The DDIM loop from x_T: ``predict(x, t)`` gives the guided noise; one draw per step but the last.

    Only ``predict`` runs in ``precision``'s autocast region; x and the DDIM update stay float32.
    ``feedback`` may replace each step's noise (3D-aware feedback, ``generate/feedback.py``).
    """
    B = x.shape[0]
    for i, timestep in enumerate(reversed(schedule.timesteps)):
        index = len(schedule) - i - 1
        t = torch.full((B,), int(timestep), device=x.device, dtype=torch.long)
        with precision.autocast():
            noise = predict(x, t).float()
        if feedback is not None:
            noise = feedback(i, x, noise, schedule.alphas[index])
        x = schedule.step(x, noise, index, None if index == 0 else randn(tuple(x.shape)))
        if on_step is not None:
            on_step(i)
    return x


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Decoded images (..., 3, H, W) in about [-1, 1] -> (..., H, W, 3) uint8, truncating as generate.py does."""
    return ((images.float().clamp(-1, 1) + 1) * 0.5 * 255).to(torch.uint8).movedim(-3, -1)


def _encode_input(model: SyncDreamer, image: torch.Tensor, settings: SamplerSettings,
                  randn: RandN) -> tuple[torch.Tensor, torch.Tensor]:
    """The scaled input latent and the CLIP embedding, float32 (outside any autocast region)."""
    c = model.config
    B = image.shape[0]
    eps = randn((B, c.vae.z_channels, c.latent_size, c.latent_size)) if settings.input_latent == "sample" else None
    with float32_region(image.device):
        return model.encode_image(image.float(), eps), model.encode_clip(image.float())


@torch.no_grad()
def sample_latents(model: SyncDreamer, image: torch.Tensor, elevation: torch.Tensor, settings: SamplerSettings,
                   randn: RandN, on_step: Optional[Callable[[int], None]] = None,
                   precision: Precision = Precision(), feedback: Optional[Feedback] = None) -> torch.Tensor:
    """B,3,256,256 images in [-1,1] at elevations (B, radians) -> B,N,4,32,32 float32 final latents.

    ``precision`` says in which dtype the denoiser runs (its weights must have been cast by
    ``precision.prepare``); everything else is float32. ``feedback``: see :func:`_denoise`.
    """
    c = model.config
    B = image.shape[0]
    x_input, clip_embed = _encode_input(model, image, settings, randn)
    v_embed = model.viewpoint_embedding(elevation)
    model.spatial_volume.camera_geometry(model.poses, model.Ks)  # float32, before the autocast region
    x = randn((B, c.view_num, c.vae.z_channels, c.latent_size, c.latent_size))
    schedule = DDIMSchedule(model.alphas_cumprod, settings.steps, settings.eta)
    batcher = ViewBatcher(settings.batch_views)
    return _denoise(schedule, x, lambda x_t, t: batcher.noise(model, x_t, t, x_input, clip_embed, v_embed,
                                                              settings.guidance), randn, precision, on_step,
                    feedback)


@torch.no_grad()
def decode_latents(model: SyncDreamer, latents: torch.Tensor) -> torch.Tensor:
    """B,N,4,h,w latents -> B,N,3,H,W images in about [-1, 1] (not clamped), decoded view by view in float32."""
    with float32_region(latents.device):
        return torch.stack([model.decode(latents[:, n].float()) for n in range(latents.shape[1])], 1)


@torch.no_grad()
def decode_views(model: SyncDreamer, latents: torch.Tensor) -> torch.Tensor:
    """B,N,4,h,w latents -> B,N,H,W,3 uint8 images (the official truncating conversion), decoded in float32."""
    return to_uint8(decode_latents(model, latents))


@torch.no_grad()
def sample_novel_view(model: SyncDreamer, image: torch.Tensor, delta_elevation_deg: float, delta_azimuth_deg: float,
                      settings: SamplerSettings, randn: RandN, precision: Precision = Precision()) -> torch.Tensor:
    """Zero123 mode: one view at a relative pose, depth-wise attention bypassed. B,3,H,W -> B,4,h,w.

    The relative pose goes through ``cc_projection`` as ``[-Δelevation, sin Δazimuth, cos Δazimuth, 0]``
    (SyncDreamer's embedding with Zero123's polar-angle sign). Guidance: ``cfg`` only (there is no
    volume to drop), so a ``harmony`` request uses its first scale as the CFG scale.
    """
    c = model.config
    B = image.shape[0]
    x_input, clip_embed = _encode_input(model, image, settings, randn)
    d_a = math.radians(delta_azimuth_deg)
    pose = torch.tensor([-math.radians(delta_elevation_deg), math.sin(d_a), math.cos(d_a), 0.0],
                        device=image.device, dtype=torch.float32).expand(B, -1)
    clip = model.project_clip(clip_embed, pose)
    guidance = Guidance("cfg", (settings.guidance.scales[0],))
    x = randn((B, c.vae.z_channels, c.latent_size, c.latent_size))
    schedule = DDIMSchedule(model.alphas_cumprod, settings.steps, settings.eta)
    return _denoise(schedule, x, lambda x_t, t: model.guided_noise(x_t, t, clip, None, x_input, guidance), randn,
                    precision)
