"""NeuS volume rendering of a signed-distance field along rays.

Opacity is NeuS's unbiased SDF→alpha with cosine annealing; the background is white. Two ways of
placing samples share the shading (``shade``):

* dense (``render_rays``, any device): uniform samples between the ray's entry and exit of the
  bounding sphere, then importance samples placed by NeuS's up-sampling with a fixed, doubling
  sharpness. Every ray gets the same number of samples.
* packed (``render_packed``): samples from an occupancy-grid march (``reconstruct.occupancy``),
  a different number per ray, stored flat with the index of their ray (nerfacc's layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import torch
import torch.nn.functional as F

from img2mesh.reconstruct.fields import NeuSField
from img2mesh.utils.settings import fixed

if TYPE_CHECKING:
    from img2mesh.reconstruct.config import ReconstructConfig


@dataclass(frozen=True)
class RenderSettings:
    """Dense sampling per ray: ``coarse_samples`` uniform + ``fine_samples`` by NeuS's up-sampling
    (built from ``reconstruct.samples_per_ray`` by :meth:`from_config`); the rest is fixed."""

    coarse_samples: int
    fine_samples: int
    bound: float  # rays are sampled where they cross the cube [-bound, bound]^3 (scene.bound)
    up_sample_steps: int = fixed(4, "NeuS's up-sampling rounds, each at twice the sharpness")
    background: float = fixed(1.0, "white, as the views are")

    @classmethod
    def from_config(cls, cfg: "ReconstructConfig", bound: float) -> "RenderSettings":
        """Half of ``samples_per_ray`` uniform, half importance-sampled, inside the scene cube."""
        return cls(coarse_samples=cfg.samples_per_ray // 2, fine_samples=cfg.samples_per_ray // 2, bound=bound)


def cube_near_far(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through [-bound, bound]³; rays that miss get near = far."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (-bound - origins) / safe
    t1 = (bound - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, torch.maximum(far, near)


def in_cube(points: torch.Tensor, bound: float) -> torch.Tensor:
    """Which points lie in [-bound, bound]³ (the only place the field's samples count)."""
    return (points.abs() <= bound).all(-1)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, count: int) -> torch.Tensor:
    """Deterministic inverse-CDF samples of ``count`` positions in ``bins`` (R,S+1) by ``weights`` (R,S)."""
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    u = torch.linspace(0.5 / count, 1 - 0.5 / count, count, device=bins.device).expand(cdf.shape[0], count)
    index = torch.searchsorted(cdf, u.contiguous(), right=True)
    below = (index - 1).clamp(min=0)
    above = index.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = torch.where(cdf_hi - cdf_lo < 1e-5, torch.ones_like(cdf_hi), cdf_hi - cdf_lo)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def _up_sample(origins, dirs, z, sdf, count: int, inv_s: float, bound: float) -> torch.Tensor:
    """NeuS's importance sampling from SDF values at z (R,S) with a fixed sharpness inv_s."""
    points = origins[:, None] + dirs[:, None] * z[..., None]
    inside = in_cube(points, bound)
    inside = (inside[:, :-1] | inside[:, 1:]).float()
    prev_sdf, next_sdf = sdf[:, :-1], sdf[:, 1:]
    prev_z, next_z = z[:, :-1], z[:, 1:]
    mid_sdf = (prev_sdf + next_sdf) * 0.5
    cos = (next_sdf - prev_sdf) / (next_z - prev_z + 1e-5)
    prev_cos = torch.cat([torch.zeros_like(cos[:, :1]), cos[:, :-1]], -1)
    cos = torch.minimum(prev_cos, cos).clamp(-1e3, 0.0) * inside
    dist = next_z - prev_z
    prev_cdf = torch.sigmoid((mid_sdf - cos * dist * 0.5) * inv_s)
    next_cdf = torch.sigmoid((mid_sdf + cos * dist * 0.5) * inv_s)
    alpha = (prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-7], -1), -1)[:, :-1]
    return sample_pdf(z, alpha * transmittance, count).detach()


def shade(field: NeuSField, points: torch.Tensor, view: torch.Tensor, dists: torch.Tensor,
          cos_anneal_ratio: float, training: bool, view_ids: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """Per sample (flat, N): NeuS opacity alpha over ``dists``, colour, normal and the SDF gradient
    (``view_ids``, one per sample: whose appearance code colours it; none: the mean code)."""
    sdf, features, grad = field.sdf_and_gradient(points, create_graph=training)
    normals = F.normalize(grad, dim=-1)
    rgb = field.color(points, normals, view, features, view_ids)
    inv_s = field.inv_s()
    true_cos = (view * grad).sum(-1)
    iter_cos = -(F.relu(-true_cos * 0.5 + 0.5) * (1.0 - cos_anneal_ratio) + F.relu(-true_cos) * cos_anneal_ratio)
    half = iter_cos * dists * 0.5
    prev_cdf = torch.sigmoid((sdf - half) * inv_s)
    next_cdf = torch.sigmoid((sdf + half) * inv_s)
    alpha = ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)
    return {"alpha": alpha, "rgb": rgb, "normals": normals, "grad": grad}


def render_rays(field: NeuSField, origins: torch.Tensor, dirs: torch.Tensor, settings: RenderSettings,
                cos_anneal_ratio: float = 1.0, perturb: bool = False, training: bool = False,
                view_ids: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """Colour (R,3), opacity (R,), normals (R,3) and the gradient norms for the eikonal loss
    (``view_ids`` (R,): each ray's view, for its appearance code)."""
    R = origins.shape[0]
    near, far = cube_near_far(origins, dirs, settings.bound)
    t = torch.linspace(0.0, 1.0, settings.coarse_samples, device=origins.device)
    z = near[:, None] + (far - near)[:, None] * t[None]
    if perturb:
        step = (far - near)[:, None] / settings.coarse_samples
        z = z + (torch.rand_like(z) - 0.5) * step
    with torch.no_grad():
        sdf = field.sdf(origins[:, None] + dirs[:, None] * z[..., None])
        per_step = settings.fine_samples // max(settings.up_sample_steps, 1)
        for i in range(settings.up_sample_steps):
            new_z = _up_sample(origins, dirs, z, sdf, per_step, 64.0 * 2**i, settings.bound)
            new_sdf = field.sdf(origins[:, None] + dirs[:, None] * new_z[..., None])
            z, order = torch.sort(torch.cat([z, new_z], -1), -1)
            sdf = torch.cat([sdf, new_sdf], -1).gather(1, order)
    dists = torch.cat([z[:, 1:] - z[:, :-1], ((far - near) / settings.coarse_samples)[:, None]], -1)
    mid = z + dists * 0.5
    points = origins[:, None] + dirs[:, None] * mid[..., None]
    S = points.shape[1]
    view = dirs[:, None].expand(-1, S, -1).reshape(-1, 3)
    sample_ids = None if view_ids is None else view_ids[:, None].expand(-1, S).reshape(-1)
    shaded = shade(field, points.reshape(-1, 3), view, dists.reshape(-1), cos_anneal_ratio, training, sample_ids)
    inside = in_cube(points, settings.bound).float()
    alpha = shaded["alpha"].reshape(R, S) * inside
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-7], -1), -1)[:, :-1]
    weights = alpha * transmittance
    opacity = weights.sum(-1)
    rgb = shaded["rgb"].reshape(R, S, 3)
    color = (weights[..., None] * rgb).sum(1) + (1.0 - opacity)[:, None] * settings.background
    normal = (weights[..., None] * shaded["normals"].reshape(R, S, 3)).sum(1)
    grad_norm = shaded["grad"].norm(dim=-1).reshape(R, S)
    return {"color": color, "opacity": opacity, "normal": normal, "grad_norm": grad_norm, "inside": inside,
            "points": points, "weights": weights}


def packed_weights(alpha: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """alpha · transmittance for packed samples sorted by ray (a per-ray exclusive product).

    The product is a cumulative sum of log(1 - alpha) minus its value where each ray starts,
    in float64 so that long packed arrays do not drift.
    """
    log_t = torch.log1p(-alpha.double().clamp(max=1 - 1e-7))
    inclusive = torch.cumsum(log_t, 0)
    exclusive = inclusive - log_t
    counts = torch.bincount(ray_indices, minlength=n_rays)
    starts = torch.cumsum(counts, 0) - counts
    offset = exclusive[starts.clamp(max=max(len(alpha) - 1, 0))] if len(alpha) else exclusive
    transmittance = torch.exp(exclusive - offset[ray_indices])
    return alpha * transmittance.to(alpha.dtype)


def render_packed(field: NeuSField, origins: torch.Tensor, dirs: torch.Tensor, ray_indices: torch.Tensor,
                  t_starts: torch.Tensor, t_ends: torch.Tensor, settings: RenderSettings,
                  cos_anneal_ratio: float = 1.0, training: bool = False,
                  weights_fn: Optional[Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = None,
                  view_ids: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """``render_rays``'s outputs from packed samples (flat N; ``ray_indices`` sorted).

    ``weights_fn(alpha, ray_indices, n_rays)`` computes alpha · transmittance; the default is the
    pure-PyTorch ``packed_weights``, nerfacc's CUDA kernel is passed in on GPUs.
    """
    R = origins.shape[0]
    mid = (t_starts + t_ends) * 0.5
    view = dirs[ray_indices]
    points = origins[ray_indices] + view * mid[:, None]
    shaded = shade(field, points, view, t_ends - t_starts, cos_anneal_ratio, training,
                   None if view_ids is None else view_ids[ray_indices])
    weights = (weights_fn or packed_weights)(shaded["alpha"], ray_indices, R)

    def accumulate(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(R, values.shape[-1], device=values.device, dtype=values.dtype).index_add_(
            0, ray_indices, weights[:, None] * values)

    opacity = torch.zeros(R, device=origins.device, dtype=weights.dtype).index_add_(0, ray_indices, weights)
    color = accumulate(shaded["rgb"]) + (1.0 - opacity)[:, None] * settings.background
    return {"color": color, "opacity": opacity, "normal": accumulate(shaded["normals"]),
            "grad_norm": shaded["grad"].norm(dim=-1), "inside": torch.ones_like(mid), "points": points,
            "weights": weights}
