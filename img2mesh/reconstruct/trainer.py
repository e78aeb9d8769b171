"""Fitting a NeuS field to views: losses, schedule, periodic checkpoints that a resume continues from."""

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

from img2mesh.reconstruct.fields import NeuSField
from img2mesh.reconstruct.renderer import RenderSettings, render_packed, render_rays
from img2mesh.reconstruct.views import Views, pixel_rays
from img2mesh.utils.device import halving_on_out_of_memory

if TYPE_CHECKING:
    from img2mesh.pipeline.config import ReconstructConfig

log = logging.getLogger("img2mesh")


@dataclass(frozen=True)
class TrainSettings:
    """How a field is fitted: built from ``reconstruct.*`` by :meth:`from_config`, not defaulted here.

    The fields with values are fixed parts of the recipe, not configuration.
    """

    steps: int
    rays_per_step: int
    learning_rate: float
    warmup_steps: int
    mask_loss: str  # "mse" or "bce" against the soft masks
    mask_weight: float
    eikonal_weight: float
    curvature_weight: float
    checkpoint_every: int
    seed: int
    encoding_learning_rate: float = 1e-2  # hash tables
    final_lr_factor: float = 0.05
    anneal_fraction: float = 0.2  # cosine annealing of NeuS's opacity over the first part of training
    grid_update_every: int = 16  # occupancy-grid sampling only

    @classmethod
    def from_config(cls, cfg: "ReconstructConfig", seed: int) -> "TrainSettings":
        """The run's settings (the curvature loss applies to the hash-grid field only)."""
        return cls(steps=cfg.steps, rays_per_step=cfg.rays_per_step, learning_rate=cfg.learning_rate,
                   warmup_steps=min(cfg.warmup_steps, cfg.steps // 4), mask_loss=cfg.mask_loss,
                   mask_weight=cfg.mask_weight,
                   eikonal_weight=cfg.eikonal_weight,
                   curvature_weight=cfg.curvature_weight if cfg.field == "hashgrid" else 0.0,
                   checkpoint_every=cfg.checkpoint_every, seed=seed)


class RayBank:
    """Every pixel of every view as a ray with its colour and soft mask, on the training device."""

    def __init__(self, views: Views, device: torch.device) -> None:
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

    def __len__(self) -> int:
        return self.origins.shape[0]

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        index = torch.randint(0, len(self), (count,), generator=generator, device="cpu").to(self.origins.device)
        return self.origins[index], self.dirs[index], self.colors[index], self.masks[index]


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


def make_optimizer(field: NeuSField, settings: TrainSettings) -> torch.optim.Optimizer:
    return field_adam(field, settings.learning_rate, settings.encoding_learning_rate)


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
                    device: torch.device = torch.device("cpu")) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"field": field.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "rng": generator.get_state(), **random_states(device),
                "grid": grid.state_dict() if grid is not None else None}, tmp)
    os.replace(tmp, path)


def render_batch(field: NeuSField, origins: torch.Tensor, dirs: torch.Tensor, render: RenderSettings,
                 grid: Optional[torch.nn.Module], cos_anneal_ratio: float, training: bool) -> dict:
    """Dense coarse-to-fine rendering, or packed samples from the occupancy grid when there is one."""
    if grid is None:
        return render_rays(field, origins, dirs, render, cos_anneal_ratio=cos_anneal_ratio, perturb=training,
                           training=training)
    ray_indices, t_starts, t_ends = grid.sample(origins, dirs, perturb=training)
    return render_packed(field, origins, dirs, ray_indices, t_starts, t_ends, render, cos_anneal_ratio, training,
                         weights_fn=getattr(grid, "weights", None))


def mask_term(opacity: torch.Tensor, masks: torch.Tensor, kind: str) -> torch.Tensor:
    """How far the rendered opacity is from the soft mask: mean squared error or binary cross-entropy."""
    if kind == "mse":
        return F.mse_loss(opacity, masks)
    return F.binary_cross_entropy(opacity.clamp(1e-3, 1 - 1e-3), masks)


def step_loss(field: NeuSField, origins: torch.Tensor, dirs: torch.Tensor, colors: torch.Tensor,
              masks: torch.Tensor, settings: TrainSettings, render: RenderSettings,
              grid: Optional[torch.nn.Module], cos_anneal_ratio: float) -> torch.Tensor:
    """L1 colour + mask (MSE or BCE) + eikonal (+ curvature) of one batch of rays."""
    out = render_batch(field, origins, dirs, render, grid, cos_anneal_ratio, training=True)
    color_loss = F.l1_loss(out["color"], colors)
    mask_loss = mask_term(out["opacity"], masks, settings.mask_loss)
    inside = out["inside"]
    eikonal = (((out["grad_norm"] - 1) ** 2) * inside).sum() / inside.sum().clamp(min=1)
    loss = color_loss + settings.mask_weight * mask_loss + settings.eikonal_weight * eikonal
    if settings.curvature_weight > 0:
        loss = loss + settings.curvature_weight * curvature_loss(field, out["points"], out["weights"])
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
          grid: Optional[torch.nn.Module] = None) -> dict:
    """Fit ``field`` to ``views``; resumes from ``checkpoint`` when it exists. Returns loss history.

    With ``grid`` (``reconstruct.occupancy``), rays are sampled by occupancy-grid marching and the
    grid is refreshed from the field every ``grid_update_every`` steps; otherwise dense sampling.
    """
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    bank = RayBank(views, device)
    field.to(device).train()
    optimizer = make_optimizer(field, settings)
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        field.load_state_dict(state["field"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"])
        restore_random_states(state, device)  # the samplers' jitter: a resume continues the same run
        if grid is not None and state.get("grid") is not None:
            grid.load_state_dict(state["grid"])
        start = state["step"]
        log.info("reconstruct: resuming training from the checkpoint at step %d", start)
    history = []
    anneal_steps = max(1, int(settings.steps * settings.anneal_fraction))
    step_in_chunks = ChunkedStep(settings.rays_per_step)
    for step in range(start, settings.steps):
        factor = learning_rate_factor(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        batch = bank.sample(settings.rays_per_step, generator)
        if grid is not None and step % settings.grid_update_every == 0:
            grid.update(field)
        anneal = min(1.0, step / anneal_steps)
        value = step_in_chunks(field, optimizer, batch, lambda o, d, c, m: step_loss(
            field, o, d, c, m, settings, render, grid, anneal))
        history.append(value)
        if on_step is not None:
            on_step(step, value)
        done = step + 1
        if checkpoint is not None and done % settings.checkpoint_every == 0 and done < settings.steps:
            save_checkpoint(checkpoint, field, optimizer, done, generator, grid, device)
    field.eval()
    return {"loss_first": history[0] if history else None, "loss_last": history[-1] if history else None,
            "steps": settings.steps, "resumed_from": start, "inv_s": field.inv_s().item(),
            "sampler": "dense" if grid is None else f"occupancy grid ({grid.backend})",
            "ray_chunk": step_in_chunks.chunk}
