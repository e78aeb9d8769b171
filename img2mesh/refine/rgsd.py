"""HiFi-123's reference-guided state distillation (RGSD) of a texture: the optimisation loop.

Each iteration renders the textured mesh at one camera and compares the VAE latent of the render,
z₀(θ), which carries the gradient back to the texels, with what reference-guided sampling makes of
that render:

* at a *fixed* camera with a stored RGNV result x̃₀ (the enhance stage's view there, or one made once
  at the start), the stop step τ is 0 and the loss is ‖z₀(θ) − x̃₀‖²;
* at a *random* camera (elevation −10°..60°, any azimuth), the (detached) render latent is
  DDIM-inverted for l steps with its rendered depth, denoised with the reference's K/V injected down
  to a stop step τ ~ U{0..l−1}, giving x̃_τ and the last noise ε̃_τ; then
  x_τ(θ) = √ᾱ_τ z₀(θ) + √(1−ᾱ_τ) ε̃_τ and the loss is ‖x_τ(θ) − x̃_τ‖² (= ᾱ_τ ‖z₀(θ) − x̂₀‖²).

Iterations alternate: fixed, random, fixed, ... . The photo's own loss at the registered input camera
(pixel MSE inside the eroded overlap of the two silhouettes, ``reference_weight``) is added every
iteration; without distillation it is the only term (the mechanics benchmark). The reference (the
photo) is inverted and denoised once, before the loop. The target and the loss themselves are
HiFi-123's library code (``hifi123/distillation.py``).

Renders are rasterised at ``supersample`` times the model's size and area-averaged down before the VAE
(as threestudio does), so that a fine atlas behind a 512² render still has most of its texels read,
and given a gradient, in every iteration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from img2mesh.hifi123.distillation import distillation_loss, distillation_target, latent_of
from img2mesh.refine.render import CameraRaster, render
from img2mesh.utils.settings import fixed

if TYPE_CHECKING:
    from img2mesh.hifi123.components import DepthDiffusion
    from img2mesh.hifi123.rgnv import ReferenceBranch, RGNVSettings
    from img2mesh.hifi123.runtime import Prompts
    from img2mesh.refine.config import RefineConfig


@dataclass(frozen=True)
class RGSDSettings:
    """One refinement's schedule (``refine.*``, :meth:`from_config`)."""

    iterations: int
    learning_rate: float
    reference_weight: float
    distillation: bool
    checkpoint_every: int
    seed: int
    betas: tuple[float, float] = fixed((0.9, 0.99), "Adam's betas on the texels")

    @classmethod
    def from_config(cls, cfg: "RefineConfig", seed: int) -> "RGSDSettings":
        return cls(cfg.iterations, cfg.learning_rate, cfg.reference_weight, cfg.distillation, cfg.checkpoint_every,
                   seed)


@dataclass
class Scene:
    """What the loop renders and compares: the cameras (rasterised once), the photo at the input camera,
    the fixed cameras' stored targets, the reference branch and the prompts."""

    pool: list[CameraRaster]  # random cameras
    fixed: list[CameraRaster]  # cameras with a stored target
    targets: Optional[torch.Tensor]  # (F, 4, h, w) the fixed cameras' x̃₀ (None without distillation)
    photo_camera: CameraRaster
    photo: torch.Tensor  # (1, 3, H, W) in [0, 1] on white
    branch: Optional["ReferenceBranch"]
    prompts: Optional["Prompts"]
    photo_region: Optional[torch.Tensor] = None  # (H, W) bool: where the photo's loss counts (None: everywhere)
    supersample: int = 1  # the rasters are this many times the model's size; renders are averaged down
    model_size: int = 0  # the model's image size (0: the rasters' own)
    photo_mask: Optional[np.ndarray] = None  # (H, W) bool at the model's size: the photo's silhouette
    photo_coverage: Optional[np.ndarray] = None  # (H, W) bool: the mesh's silhouette at the photo camera

    def image(self, texture: torch.Tensor, raster: CameraRaster) -> torch.Tensor:
        """The render at one camera at the model's size (area-averaged from the supersampled raster)."""
        rendered = render(texture, raster)
        return F.avg_pool2d(rendered, self.supersample) if self.supersample > 1 else rendered

    def depth(self, model: "DepthDiffusion", raster: CameraRaster) -> torch.Tensor:
        """The render's depth condition at the latent's size."""
        from img2mesh.hifi123.distillation import depth_condition
        from img2mesh.refine.render import inverse_depth

        size = (self.model_size or raster.mask.shape[0]) // model.vae_factor
        return depth_condition(model, *inverse_depth(raster, size))


def photo_term(rendered: torch.Tensor, photo: torch.Tensor, region: Optional[torch.Tensor]) -> torch.Tensor:
    """Pixel MSE of a render against the photo, over ``region`` only when given (the eroded overlap of
    the mesh's and the photo's silhouettes: a pixel the two disagree on says nothing about the texture)."""
    if region is None:
        return F.mse_loss(rendered, photo)
    weight = region.to(rendered)[None, None]
    return ((rendered - photo) ** 2 * weight).sum() / (weight.sum() * rendered.shape[1]).clamp(min=1)


def photo_region(render_mask: np.ndarray, photo_mask: np.ndarray, erosion: int) -> np.ndarray:
    """The overlap of the mesh's silhouette at the photo camera and the photo's mask, eroded by
    ``erosion`` pixels (bool)."""
    from scipy import ndimage

    both = render_mask & photo_mask
    return ndimage.binary_erosion(both, iterations=erosion) if erosion > 0 else both


class TextureRefiner:
    """The optimisation: the texture as a parameter, Adam, the alternating schedule, checkpoints."""

    def __init__(self, texture: np.ndarray, settings: RGSDSettings, device: torch.device) -> None:
        values = torch.from_numpy(np.array(texture)).float().div(255).permute(2, 0, 1)[None]
        self.texture = torch.nn.Parameter(values.to(device))
        self.settings = settings
        self.optimizer = torch.optim.Adam([self.texture], lr=settings.learning_rate, betas=settings.betas)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.iteration = 0
        self.history: list[dict[str, float]] = []
        self.split_guidance = False  # set after a CUDA out-of-memory: guidance as two UNet calls
        self.touched = torch.zeros(values.shape[-2:], dtype=torch.bool, device=device)  # texels given a gradient
        self.touched_per_step: list[float] = []  # the share of ``charts`` texels each step gave a gradient
        self.charts: Optional[torch.Tensor] = None  # (T, T) bool: texels inside the charts (set by the caller)

    def save(self, path: Path) -> None:
        """A resume point (atomic)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"texture": self.texture.detach().cpu(), "optimizer": self.optimizer.state_dict(),
                    "iteration": self.iteration, "rng": self.generator.get_state(), "history": self.history,
                    "touched": self.touched.cpu(), "touched_per_step": self.touched_per_step}, tmp)
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        with torch.no_grad():
            self.texture.copy_(state["texture"].to(self.texture.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"])
        self.iteration, self.history = int(state["iteration"]), list(state["history"])
        if "touched" in state:
            self.touched = state["touched"].to(self.touched.device)
            self.touched_per_step = list(state["touched_per_step"])

    def texture_uint8(self) -> np.ndarray:
        """The texture as H,W,3 uint8."""
        values = self.texture.detach().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
        return (values * 255).round().astype(np.uint8)

    def step(self, model: Optional["DepthDiffusion"], scene: Scene, rgnv: Optional["RGNVSettings"]) -> dict[str, float]:
        """One iteration: the photo's loss, plus (with distillation) a fixed or a random camera's term."""
        settings = self.settings
        self.optimizer.zero_grad(set_to_none=True)
        facts: dict[str, float] = {}
        loss = torch.zeros((), device=self.texture.device)
        if settings.reference_weight > 0:
            photo_loss = photo_term(scene.image(self.texture, scene.photo_camera), scene.photo, scene.photo_region)
            loss = loss + settings.reference_weight * photo_loss
            facts["photo"] = float(photo_loss.detach())
        if settings.distillation and model is not None and rgnv is not None:
            fixed_turn = self.iteration % 2 == 0 and scene.targets is not None and len(scene.fixed) > 0
            if fixed_turn:
                index = (self.iteration // 2) % len(scene.fixed)
                z0 = latent_of(model, scene.image(self.texture, scene.fixed[index]), grad=True)
                term = F.mse_loss(z0, scene.targets[index:index + 1].to(z0))
                facts.update(camera=float(index), stop=0.0)
            else:
                pick = int(torch.randint(len(scene.pool), (1,), generator=self.generator))
                stop = int(torch.randint(rgnv.inversion_steps, (1,), generator=self.generator))
                raster = scene.pool[pick]
                z0 = latent_of(model, scene.image(self.texture, raster), grad=True)
                x_tau, noise, alpha = distillation_target(model, scene.branch, scene.prompts, scene.depth(model, raster),
                                                          z0.detach(), stop, rgnv, self.split_guidance)
                term = distillation_loss(z0, x_tau, noise, alpha)
                facts.update(camera=float(pick), stop=float(stop))
            loss = loss + term
            facts["distillation"] = float(term.detach())
        loss.backward()
        if self.texture.grad is not None:
            moved = self.texture.grad[0].abs().sum(0) > 0
            self.touched |= moved
            if self.charts is not None:
                self.touched_per_step.append(float((moved & self.charts).sum() / self.charts.sum().clamp(min=1)))
        self.optimizer.step()
        with torch.no_grad():
            self.texture.clamp_(0, 1)
        self.iteration += 1
        facts["loss"] = float(loss.detach())
        self.history.append(facts)
        return facts

    def step_retrying(self, model: Optional["DepthDiffusion"], scene: Scene,
                      rgnv: Optional["RGNVSettings"]) -> dict[str, float]:
        """:meth:`step`; after a CUDA out-of-memory, again (and from then on) with the guided batch of two
        run as two UNet calls (``utils.device.halving_on_out_of_memory`` from 2 to 1)."""
        import logging

        from img2mesh.utils.device import halving_on_out_of_memory

        def attempt(batch: int) -> dict[str, float]:
            self.split_guidance = batch == 1
            return self.step(model, scene, rgnv)

        facts, _ = halving_on_out_of_memory(attempt, 1 if self.split_guidance else 2, 1, lambda batch: logging.getLogger(
            "img2mesh").warning("refine: CUDA out of memory; guiding in two UNet calls from now on"))
        return facts

    def run(self, model: Optional["DepthDiffusion"], scene: Scene, rgnv: Optional["RGNVSettings"],
            checkpoint: Optional[Path] = None, on_step: Optional[Callable[[dict[str, float]], None]] = None) -> None:
        """Iterate to ``settings.iterations`` (from a checkpoint when one exists), saving resume points."""
        if checkpoint is not None and checkpoint.is_file():
            self.load(checkpoint)
        while self.iteration < self.settings.iterations:
            facts = self.step_retrying(model, scene, rgnv)
            if on_step is not None:
                on_step(facts)
            if checkpoint is not None and self.iteration % self.settings.checkpoint_every == 0 \
                    and self.iteration < self.settings.iterations:
                self.save(checkpoint)
