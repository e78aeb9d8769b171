"""3D-aware feedback during sampling (after Ouroboros3D, in a training-free form of its own).

Ouroboros3D trains its multi-view diffusion model and its 3D reconstruction model together, and
feeds the reconstruction's colour and canonical-coordinate maps back to the diffusion model as
conditions at every step. Nothing here is trained: at the DDIM steps listed in
``generate.feedback.steps``, the sampler's clean-view prediction x̂₀ of the 16 views is decoded, a
small NeuS field is fitted to those views (``reconstruct``'s field, renderer, trainer, hull start
and robust terms: no second NeuS), rendered back at the 16 cameras and encoded; the renders replace
part of x̂₀ where they cover the object, and DDIM continues from the blended x̂₀ (the noise
prediction is re-derived from it, so the sampler stays the same DDIM). Each fit continues the
previous one (warm start), so later feedback steps cost a fraction of a fresh reconstruction.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from img2mesh.utils.ddim import noise_for, predicted_x0
from img2mesh.utils.settings import fixed

if TYPE_CHECKING:
    from img2mesh.generate.model import SyncDreamer
    from img2mesh.pipeline.config import Config
    from img2mesh.reconstruct.fields import FieldConfig
    from img2mesh.reconstruct.hull_init import HullSettings
    from img2mesh.reconstruct.renderer import RenderSettings
    from img2mesh.reconstruct.trainer import TrainSettings

RENDER_CHUNK = 4096
VIEW_COUNT = 16


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


@dataclass(frozen=True)
class FeedbackSettings:
    """``generate.feedback.*`` as the sampler uses it, with the fast model's field, fit and hull start
    (built by :meth:`from_config` from ``generate.feedback`` and ``reconstruct``'s robust terms)."""

    steps: frozenset[int]  # 1 = the first DDIM step (from x_T)
    weight: float
    image_size: int
    field: "FieldConfig"
    train: "TrainSettings"  # one fit's steps (generate.feedback.fit_steps), reconstruct's loss terms
    render: "RenderSettings"
    hull: "HullSettings"
    warm_anneal_fraction: float = fixed(0.0, "a warm-started fit continues with NeuS's opacity already sharp")

    @classmethod
    def from_config(cls, config: "Config") -> "FeedbackSettings":
        """The feedback of a run: its own widths and fit length, reconstruct's loss terms and hull start."""
        from img2mesh.neus.keys import FIELD_KEYS
        from img2mesh.reconstruct.fields import FieldConfig
        from img2mesh.reconstruct.hull_init import HullSettings
        from img2mesh.reconstruct.renderer import RenderSettings
        from img2mesh.reconstruct.trainer import TrainSettings

        fb, bound = config.generate.feedback, config.scene.bound
        # reconstruct's settings with the fast model's field keys (the same keys, neus.keys)
        rec = dataclasses.replace(config.reconstruct, **{key: getattr(fb, key) for key in FIELD_KEYS})
        field = FieldConfig.from_config(rec, bound, VIEW_COUNT)
        train = dataclasses.replace(TrainSettings.from_config(rec, config.run.seed), steps=fb.fit_steps,
                                    rays_per_step=fb.rays_per_step, warmup_steps=max(1, fb.fit_steps // 10),
                                    curvature_weight=0.0, checkpoint_every=fb.fit_steps)
        render = RenderSettings.from_config(rec, bound)
        hull = dataclasses.replace(HullSettings.from_config(rec), steps=fb.fit_steps)
        return cls(frozenset(fb.steps), fb.weight, fb.image_size, field, train, render, hull)

    @property
    def enabled(self) -> bool:
        return bool(self.steps)

    @property
    def fit_steps(self) -> int:
        return self.train.steps


class ViewFitter:
    """One sample set's 3D model: a NeuS field fitted to predicted views, warm-started between calls.

    The first call starts the field from the visual hull of the views' masks (the sphere when the
    hull is empty); every later call continues from where the previous fit ended.
    """

    def __init__(self, Ks: np.ndarray, poses: np.ndarray, settings: FeedbackSettings, seed: int,
                 device: torch.device) -> None:
        from img2mesh.reconstruct.fields import NeuSField

        self.Ks, self.poses = Ks, poses  # Ks for settings.image_size pixels
        self.settings, self.seed, self.device = settings, seed, device
        self.bound = settings.field.bound
        self.field = NeuSField(settings.field).to(device)
        self.fits = 0

    @torch.enable_grad()  # the sampler runs without autograd; the fit needs it
    def fit(self, images: np.ndarray) -> dict[str, float]:
        """Continue fitting to N,H,W,3 views in [0, 1] on white (white-background masks)."""
        from img2mesh.reconstruct.hull_init import fit_to_hull
        from img2mesh.reconstruct.trainer import train
        from img2mesh.reconstruct.views import Views, threshold_masks

        masks, source = threshold_masks(images)
        views = Views(images.astype(np.float32), masks.astype(np.float32), self.Ks, self.poses, source)
        info: dict[str, float] = {}
        if self.fits == 0 and views.silhouettes.any(axis=(1, 2)).all():
            try:
                info = fit_to_hull(self.field, views, self.bound, self.settings.hull, self.seed, self.device)
            except ValueError:  # the views agree on no point yet: start from the sphere
                pass
        settings = dataclasses.replace(self.settings.train, seed=self.seed + self.fits, **(
            {} if self.fits == 0 else {"anneal_fraction": self.settings.warm_anneal_fraction}))
        stats = train(self.field, views, settings, self.settings.render, self.device)
        self.fits += 1
        return {**info, "loss_last": float(stats["loss_last"])}

    @torch.no_grad()
    def render_views(self) -> tuple[np.ndarray, np.ndarray]:
        """The field at the N cameras (with the mean appearance): colours (N,H,W,3) on white and opacity
        (N,H,W), in [0, 1]."""
        from img2mesh.reconstruct.renderer import render_rays
        from img2mesh.reconstruct.views import pixel_rays

        size = self.settings.image_size
        colours, opacities = [], []
        for K, pose in zip(self.Ks, self.poses):
            origin, dirs = pixel_rays(K, pose, size, size)
            d = torch.from_numpy(np.ascontiguousarray(dirs, dtype=np.float32)).reshape(-1, 3).to(self.device)
            o = torch.from_numpy(np.asarray(origin, dtype=np.float32)).to(self.device).expand_as(d)
            parts = [render_rays(self.field, o[i:i + RENDER_CHUNK], d[i:i + RENDER_CHUNK], self.settings.render)
                     for i in range(0, d.shape[0], RENDER_CHUNK)]
            colours.append(torch.cat([p["color"] for p in parts]).reshape(size, size, 3).clamp(0, 1).cpu())
            opacities.append(torch.cat([p["opacity"] for p in parts]).reshape(size, size).clamp(0, 1).cpu())
        return torch.stack(colours).numpy(), torch.stack(opacities).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two images in [0, 1]."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * float(np.log10(mse))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(..., C, H, W) -> (..., C, size, size): area-averaged down, bilinear up."""
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])
    mode = "area" if size < flat.shape[-1] else "bilinear"
    out = F.interpolate(flat, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return out.reshape(*lead, *out.shape[-3:])


# What the stage keeps of each feedback step: (1-based step, sample set, renders N,H,W,3 uint8).
RenderSink = Callable[[int, int, np.ndarray], None]


class SamplingFeedback:
    """The hook the sampler calls after each noise prediction (``sample_latents(feedback=...)``)."""

    def __init__(self, model: "SyncDreamer", settings: FeedbackSettings, sets: int, seed: int,
                 device: torch.device, on_renders: Optional[RenderSink] = None) -> None:
        self.model, self.settings, self.on_renders = model, settings, on_renders
        size = settings.image_size
        Ks = model.Ks.detach().cpu().numpy().astype(np.float64).copy()
        Ks[:, :2] *= size / model.config.image_size
        poses = model.poses.detach().cpu().numpy().astype(np.float64)
        self.fitters = [ViewFitter(Ks, poses, settings, seed + k, device) for k in range(sets)]
        self.records: list[dict] = []

    @torch.no_grad()
    def __call__(self, step_index: int, x_t: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """``noise`` (B,N,4,h,w) for DDIM step ``step_index`` (0-based), blended at the feedback steps."""
        step = step_index + 1
        if step not in self.settings.steps or self.settings.weight == 0:
            return noise
        start = time.perf_counter()
        x0 = predicted_x0(x_t, noise, alpha.to(x_t))
        predicted = self.decode(x0)  # B,N,3,S,S in [0, 1]
        renders, coverage, fit_psnr = [], [], []
        for k, fitter in enumerate(self.fitters):
            views = predicted[k].permute(0, 2, 3, 1).cpu().numpy()
            fitter.fit(views)
            colour, opacity = fitter.render_views()
            fit_psnr.append(round(psnr(colour, views), 3))
            if self.on_renders is not None:
                self.on_renders(step, k, (colour * 255).round().astype(np.uint8))
            renders.append(torch.from_numpy(colour).permute(0, 3, 1, 2))
            coverage.append(torch.from_numpy(opacity)[:, None])
        latents = self.encode(torch.stack(renders).to(x_t.device))
        cover = resize_images(torch.stack(coverage).to(x_t.device), x_t.shape[-1])
        self.records.append({"step": step, "seconds": round(time.perf_counter() - start, 3),
                             "fit_psnr": fit_psnr})
        return blend_noise(x_t, noise, alpha, latents, cover, self.settings.weight)

    @torch.no_grad()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """B,N,4,h,w latents -> B,N,3,S,S images in [0, 1] at the fitting size."""
        from img2mesh.generate.sampler import decode_latents

        images = decode_latents(self.model, x0)
        return resize_images(((images.clamp(-1, 1) + 1) * 0.5).float(), self.settings.image_size)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """B,N,3,S,S renders in [0, 1] -> B,N,4,h,w scaled latents (the VAE posterior's mode)."""
        from img2mesh.generate.precision import float32_region

        full = resize_images(images.float(), self.model.config.image_size) * 2 - 1
        with float32_region(images.device):
            return torch.stack([self.model.encode_image(full[:, n]) for n in range(full.shape[1])], 1)

    @torch.no_grad()
    def signed_distances(self) -> list[np.ndarray]:
        """Each set's last fit as a signed-distance grid over the scene cube (what ``reconstruct.init:
        feedback`` starts from); none before the first feedback step."""
        from img2mesh.mesh.extract import sdf_grid
        from img2mesh.reconstruct.hull_init import HULL_RESOLUTION

        if not self.records:
            return []
        return [sdf_grid(f.field, HULL_RESOLUTION, f.bound, f.device).astype(np.float32) for f in self.fitters]

    def summary(self) -> dict:
        """What the manifest records: the settings, the seconds spent, a consistency figure per step."""
        return {"steps": sorted(self.settings.steps), "weight": self.settings.weight,
                "fit_steps": self.settings.fit_steps, "image_size": self.settings.image_size,
                "seconds": round(sum(r["seconds"] for r in self.records), 3), "per_step": self.records}
