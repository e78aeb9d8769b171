"""Fitting a NeuS field to views: losses, schedule, periodic checkpoints that a resume continues from.

Generated views disagree with each other a little; four settings make the fit tolerate it (each off
by default in the recipe's oldest form, and measured in docs/robustness.md): a colour term that
punishes large residuals less (``color_loss: soft_l1``, the official SyncDreamer NeuS's), a mask term
that ignores a band of pixels along each silhouette (``mask_margin``), per-view appearance codes
(``appearance_dim``, in the field) and per-view camera refinement (``pose_refine``, ``poses.py``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from img2mesh.neus.kinds import field_kind
from img2mesh.reconstruct.fields import NeuSField
from img2mesh.reconstruct.poses import PoseCorrection
from img2mesh.reconstruct.renderer import RenderSettings, render_packed, render_rays
from img2mesh.reconstruct.views import Views, pixel_rays
from img2mesh.utils.device import halving_on_out_of_memory
from img2mesh.utils.settings import fixed

if TYPE_CHECKING:
    from img2mesh.reconstruct.config import ReconstructConfig

log = logging.getLogger("img2mesh")
ANNEAL_FRACTION = 0.2  # NeuS's opacity is annealed over the first fifth of a fresh training
SOFT_L1_EPSILON = 1e-3  # the official soft-L1's epsilon under the square root


@dataclass(frozen=True)
class TrainSettings:
    """How a field is fitted: built from ``reconstruct.*`` by :meth:`from_config`, not defaulted here.

    The fields with values are fixed parts of the recipe, not configuration.
    """

    steps: int
    rays_per_step: int
    learning_rate: float
    warmup_steps: int
    color_loss: str  # "l1" or "soft_l1" (sqrt(|rgb error|^2 + 1e-3), the official SyncDreamer NeuS's)
    mask_loss: str  # "mse" or "bce" against the soft masks
    mask_weight: float
    mask_margin: int  # pixels along each silhouette left out of the mask term
    eikonal_weight: float
    curvature_weight: float
    pose_refine: bool
    checkpoint_every: int
    seed: int
    anneal_fraction: float  # cosine annealing of NeuS's opacity over this first part of training
    encoding_learning_rate: float = fixed(1e-2, "the hash tables' learning rate (instant-nsr-pl)")
    final_lr_factor: float = fixed(0.05, "the cosine schedule's end, relative to the start")
    grid_update_every: int = fixed(16, "occupancy-grid refresh interval (occupancy sampling only)")
    pose_learning_rate: float = fixed(1e-3, "the camera corrections' learning rate (BARF: 1e-3)")
    pose_weight: float = fixed(0.1, "the L2 penalty that holds the corrections near zero")
    pose_warmup_fraction: float = fixed(0.1, "part of training before the cameras may move")

    @classmethod
    def from_config(cls, cfg: "ReconstructConfig", seed: int) -> "TrainSettings":
        """The run's settings (the curvature loss applies to the hash-grid field only)."""
        return cls(steps=cfg.steps, rays_per_step=cfg.rays_per_step, learning_rate=cfg.learning_rate,
                   warmup_steps=min(cfg.warmup_steps, cfg.steps // 4), color_loss=cfg.color_loss,
                   mask_loss=cfg.mask_loss, mask_weight=cfg.mask_weight, mask_margin=cfg.mask_margin,
                   eikonal_weight=cfg.eikonal_weight,
                   curvature_weight=cfg.curvature_weight if field_kind(cfg.field).curvature else 0.0,
                   pose_refine=cfg.pose_refine, checkpoint_every=cfg.checkpoint_every, seed=seed,
                   anneal_fraction=ANNEAL_FRACTION)


def silhouette_band(masks: np.ndarray, margin: int) -> np.ndarray:
    """Per pixel (N,H,W bool), whether it lies within ``margin`` pixels of its view's silhouette edge."""
    from scipy import ndimage

    band = np.zeros(masks.shape, bool)
    if margin <= 0:
        return band
    for i, silhouette in enumerate(masks >= 0.5):
        grown = ndimage.binary_dilation(silhouette, iterations=margin)
        shrunk = ndimage.binary_erosion(silhouette, iterations=margin, border_value=1)
        band[i] = grown & ~shrunk
    return band


class RayBank:
    """Every pixel of every view as a ray with its colour, soft mask, the mask term's weight (0 in
    the silhouette band ``mask_margin`` leaves out) and its view's index, on the training device."""

    def __init__(self, views: Views, device: torch.device, mask_margin: int = 0) -> None:
        width, height = views.size
        origins, dirs = [], []
        for K, pose in zip(views.Ks, views.poses):
            origin, d = pixel_rays(K, pose, width, height)
            origins.append(np.broadcast_to(origin, d.shape))
            dirs.append(d)
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(-1, a.shape[-1]).to(device)  # noqa: E731
        self.origins = as_tensor(np.stack(origins))
        self.dirs = as_tensor(np.stack(dirs))
        self.colors = as_tensor(views.images)
        self.masks = torch.from_numpy(np.ascontiguousarray(views.masks, dtype=np.float32).reshape(-1)).to(device)
        keep = ~silhouette_band(views.masks, mask_margin)
        self.mask_weights = torch.from_numpy(keep.reshape(-1).astype(np.float32)).to(device)
        count, pixels = views.masks.shape[0], width * height
        self.view_ids = torch.arange(count, device=device).repeat_interleave(pixels)

    def __len__(self) -> int:
        return self.origins.shape[0]

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Origins, directions, colours, masks, mask weights and view indices of ``count`` random rays."""
        index = torch.randint(0, len(self), (count,), generator=generator, device="cpu").to(self.origins.device)
        return (self.origins[index], self.dirs[index], self.colors[index], self.masks[index],
                self.mask_weights[index], self.view_ids[index])


def learning_rate_factor(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_factor``."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(settings.steps - settings.warmup_steps, 1)
    return settings.final_lr_factor + (1 - settings.final_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def field_adam(field: NeuSField, learning_rate: float, encoding_learning_rate: float,
               params: Optional[Iterable[torch.nn.Parameter]] = None) -> torch.optim.Optimizer:
    """Adam over ``params`` (default: all of the field's), the hash tables in a group at their own rate;
    each group keeps its ``base_lr`` for the schedule."""
    encoding = list(field.encoding.parameters()) if field.encoding is not None else []
    ids = {id(p) for p in encoding}
    rest = [p for p in (field.parameters() if params is None else params) if id(p) not in ids]
    groups = [{"params": rest, "lr": learning_rate, "base_lr": learning_rate}]
    if encoding:
        groups.append({"params": encoding, "lr": encoding_learning_rate, "base_lr": encoding_learning_rate})
    return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15)


def make_optimizer(field: NeuSField, settings: TrainSettings, poses: Optional[PoseCorrection] = None
                   ) -> torch.optim.Optimizer:
    """The field's Adam, with the camera corrections in a group of their own (rate 0 until the warm-up ends)."""
    optimizer = field_adam(field, settings.learning_rate, settings.encoding_learning_rate)
    if poses is not None:
        optimizer.add_param_group({"params": list(poses.parameters()), "lr": 0.0, "base_lr": settings.pose_learning_rate,
                                   "poses": True})
    return optimizer


def curvature_loss(field: NeuSField, points: torch.Tensor, weights: torch.Tensor, count: int = 1024) -> torch.Tensor:
    """Normals at surface points and at points 0.005 away should agree (hash-grid SDFs are noisy)."""
    flat_points, flat_weights = points.reshape(-1, 3), weights.reshape(-1).detach()
    index = torch.multinomial(flat_weights + 1e-8, min(count, flat_weights.numel()), replacement=False)
    x = flat_points[index].detach()
    offset = F.normalize(torch.randn_like(x), dim=-1) * 0.005
    _, _, g0 = field.sdf_and_gradient(x, create_graph=True)
    _, _, g1 = field.sdf_and_gradient(x + offset, create_graph=True)
    return (F.normalize(g0, dim=-1) - F.normalize(g1, dim=-1)).pow(2).sum(-1).mean()


def random_states(device: torch.device) -> dict:
    """The global random states a training step draws from (CPU, and the device's on CUDA)."""
    states = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def restore_random_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch_rng"])
    if device.type == "cuda" and states.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(states["cuda_rng"], device)


def save_checkpoint(path: Path, field: NeuSField, optimizer: torch.optim.Optimizer, step: int,
                    generator: torch.Generator, grid: Optional[torch.nn.Module] = None,
                    device: torch.device = torch.device("cpu"), poses: Optional[PoseCorrection] = None) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"field": field.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "rng": generator.get_state(), **random_states(device),
                "grid": grid.state_dict() if grid is not None else None,
                "poses": poses.state_dict() if poses is not None else None}, tmp)
    os.replace(tmp, path)


def render_batch(field: NeuSField, origins: torch.Tensor, dirs: torch.Tensor, render: RenderSettings,
                 grid: Optional[torch.nn.Module], cos_anneal_ratio: float, training: bool,
                 view_ids: Optional[torch.Tensor] = None) -> dict:
    """Dense coarse-to-fine rendering, or packed samples from the occupancy grid when there is one;
    ``view_ids`` (one per ray) pick each ray's appearance code."""
    if grid is None:
        return render_rays(field, origins, dirs, render, cos_anneal_ratio=cos_anneal_ratio, perturb=training,
                           training=training, view_ids=view_ids)
    ray_indices, t_starts, t_ends = grid.sample(origins, dirs, perturb=training)
    return render_packed(field, origins, dirs, ray_indices, t_starts, t_ends, render, cos_anneal_ratio, training,
                         weights_fn=getattr(grid, "weights", None), view_ids=view_ids)


def mask_term(opacity: torch.Tensor, masks: torch.Tensor, kind: str,
              weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """How far the rendered opacity is from the soft mask: mean squared error or binary cross-entropy,
    averaged over the rays (``weights``: 0 leaves a ray out, as the silhouette band does)."""
    reduction = "mean" if weights is None else "none"
    if kind == "mse":
        per_ray = F.mse_loss(opacity, masks, reduction=reduction)
    else:
        per_ray = F.binary_cross_entropy(opacity.clamp(1e-3, 1 - 1e-3), masks, reduction=reduction)
    return per_ray if weights is None else (per_ray * weights).sum() / per_ray.numel()


def color_term(rendered: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean colour error per ray: L1 over the channels, or the official soft-L1 (a ray's colour error
    as a distance, so one wrong channel costs what it costs, not three times)."""
    if kind == "soft_l1":
        return torch.sqrt(((rendered - target) ** 2).sum(-1) + SOFT_L1_EPSILON).mean()
    return F.l1_loss(rendered, target)


def step_loss(field: NeuSField, origins: torch.Tensor, dirs: torch.Tensor, colors: torch.Tensor,
              masks: torch.Tensor, settings: TrainSettings, render: RenderSettings,
              grid: Optional[torch.nn.Module], cos_anneal_ratio: float, mask_weights: Optional[torch.Tensor] = None,
              view_ids: Optional[torch.Tensor] = None, poses: Optional[PoseCorrection] = None) -> torch.Tensor:
    """Colour + mask (MSE or BCE) + eikonal (+ curvature) of one batch of rays (moved by ``poses``)."""
    if poses is not None:
        origins, dirs = poses(origins, dirs, view_ids)
    out = render_batch(field, origins, dirs, render, grid, cos_anneal_ratio, training=True,
                       view_ids=view_ids if field.config.appearance_dim else None)
    color_loss = color_term(out["color"], colors, settings.color_loss)
    mask_loss = mask_term(out["opacity"], masks, settings.mask_loss, mask_weights if settings.mask_margin else None)
    inside = out["inside"]
    eikonal = (((out["grad_norm"] - 1) ** 2) * inside).sum() / inside.sum().clamp(min=1)
    loss = color_loss + settings.mask_weight * mask_loss + settings.eikonal_weight * eikonal
    if settings.curvature_weight > 0:
        loss = loss + settings.curvature_weight * curvature_loss(field, out["points"], out["weights"])
    if poses is not None:
        loss = loss + settings.pose_weight * poses.penalty()
    return loss


class ChunkedStep:
    """One optimiser step over a batch of rays, rendered ``chunk`` rays at a time.

    Gradients of the chunks accumulate, each chunk's loss weighted by its share of the rays, so the
    colour and mask terms (means over rays) are exactly those of the whole batch; the eikonal and
    curvature terms are averaged per chunk. A CUDA out-of-memory error halves the chunk (logged)
    and redoes the step; the smaller chunk is kept for the rest of training.
    """

    MIN_CHUNK = 64

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk

    def __call__(self, field: NeuSField, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...],
                 loss_of: Callable[..., torch.Tensor]) -> float:
        count = batch[0].shape[0]

        def accumulate(chunk: int) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)  # a retried step starts from clean gradients
            total = torch.zeros((), device=batch[0].device)
            for start in range(0, count, chunk):
                part = [values[start:start + chunk] for values in batch]
                loss = loss_of(*part) * (part[0].shape[0] / count)
                loss.backward()
                total += loss.detach()
            return total

        total, self.chunk = halving_on_out_of_memory(accumulate, self.chunk, self.MIN_CHUNK, lambda size: log.warning(
            "reconstruct: CUDA out of memory; retrying the step with %d rays per chunk", size))
        optimizer.step()
        return total.item()


def train(field: NeuSField, views: Views, settings: TrainSettings, render: RenderSettings, device: torch.device,
          checkpoint: Optional[Path] = None, on_step: Optional[Callable[[int, float], None]] = None,
          grid: Optional[torch.nn.Module] = None, poses: Optional[PoseCorrection] = None) -> dict:
    """Fit ``field`` to ``views``; resumes from ``checkpoint`` when it exists. Returns loss history.

    With ``grid`` (``reconstruct.occupancy``), rays are sampled by occupancy-grid marching and the
    grid is refreshed from the field every ``grid_update_every`` steps; otherwise dense sampling.
    With ``settings.pose_refine`` the views' cameras are refined too: ``poses`` (made here when not
    given) holds the corrections afterwards.
    """
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    bank = RayBank(views, device, settings.mask_margin)
    field.to(device).train()
    if settings.pose_refine and poses is None:
        poses = PoseCorrection(len(views.images))
    if poses is not None:
        poses.to(device).train()
    optimizer = make_optimizer(field, settings, poses)
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        field.load_state_dict(state["field"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"])
        restore_random_states(state, device)  # the samplers' jitter: a resume continues the same run
        if grid is not None and state.get("grid") is not None:
            grid.load_state_dict(state["grid"])
        if poses is not None and state.get("poses") is not None:
            poses.load_state_dict(state["poses"])
        start = state["step"]
        log.info("reconstruct: resuming training from the checkpoint at step %d", start)
    history = []
    anneal_steps = max(1, int(settings.steps * settings.anneal_fraction))
    pose_start = int(settings.steps * settings.pose_warmup_fraction)
    step_in_chunks = ChunkedStep(settings.rays_per_step)
    for step in range(start, settings.steps):
        factor = learning_rate_factor(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = 0.0 if group.get("poses") and step < pose_start else group["base_lr"] * factor
        batch = bank.sample(settings.rays_per_step, generator)
        if grid is not None and step % settings.grid_update_every == 0:
            grid.update(field)
        anneal = min(1.0, step / anneal_steps) if settings.anneal_fraction > 0 else 1.0
        value = step_in_chunks(field, optimizer, batch, lambda o, d, c, m, w, v: step_loss(
            field, o, d, c, m, settings, render, grid, anneal, w, v, poses))
        history.append(value)
        if on_step is not None:
            on_step(step, value)
        done = step + 1
        if checkpoint is not None and done % settings.checkpoint_every == 0 and done < settings.steps:
            save_checkpoint(checkpoint, field, optimizer, done, generator, grid, device, poses)
    field.eval()
    if poses is not None:
        poses.eval()
    return {"loss_first": history[0] if history else None, "loss_last": history[-1] if history else None,
            "steps": settings.steps, "resumed_from": start, "inv_s": field.inv_s().item(),
            "sampler": "dense" if grid is None else f"occupancy grid ({grid.backend})",
            "ray_chunk": step_in_chunks.chunk}
