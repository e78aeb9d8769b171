"""Start NeuS from the visual hull instead of a sphere (``reconstruct.init: hull``).

The silhouettes already say where the object can be: the hull of the 16 masks. Fitting the SDF
network to the hull's signed distance first (points and distances only, no rendering, so a few
hundred steps cost seconds) lets the photometric training start where the hull ends and spend its
steps on concavities and detail, instead of growing thin parts out of a sphere, which NeuS's
smoothness bias tends to melt into the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from img2mesh.reconstruct.fields import NeuSField
from img2mesh.reconstruct.trainer import TrainSettings, field_adam
from img2mesh.reconstruct.views import Views
from img2mesh.utils.settings import fixed

if TYPE_CHECKING:
    from img2mesh.reconstruct.config import ReconstructConfig

HULL_RESOLUTION = 96  # hull cells per side: fine enough for thin parts at 256² masks, carved in ~1 s
NEAR_SURFACE = 0.02  # world units: the jitter of the near-surface points


@dataclass(frozen=True)
class HullSettings:
    """How the start is fitted (``reconstruct.init_steps``, ``hull_variance``, ``hull_tolerance``,
    ``eikonal_weight``; built by :meth:`from_config`)."""

    steps: int
    variance: float  # NeuS's variance when training starts (reconstruct.hull_variance)
    tolerance: int  # views that may see background where the hull still keeps a cell
    eikonal_weight: float
    points: int = fixed(8192, "points per fitting step: half uniform in the cube, half near the surface")
    learning_rate: float = fixed(1e-3, "the fit's Adam rate")

    @classmethod
    def from_config(cls, cfg: "ReconstructConfig") -> "HullSettings":
        return cls(cfg.init_steps, cfg.hull_variance, cfg.hull_tolerance, cfg.eikonal_weight)


def hull_signed_distance(views: Views, bound: float, resolution: int = HULL_RESOLUTION, tolerance: int = 0) -> np.ndarray:
    """Signed distance (resolution³ float32, indexed [x, y, z], negative inside) to the visual hull
    (``tolerance`` > 0: the hull that lets that many views disagree, ``utils.hull.carve``)."""
    from scipy.ndimage import distance_transform_edt

    from img2mesh.utils.hull import carve

    inside = carve(views.silhouettes, views.Ks, views.poses, resolution, bound, tolerance)
    cell = 2 * bound / (resolution - 1)
    if not inside.any():  # nothing carved survives: no better start than NeuS's sphere
        raise ValueError("the visual hull of the masks is empty")
    outside_distance = distance_transform_edt(~inside) * cell
    inside_distance = distance_transform_edt(inside) * cell
    # Half a cell either side, so the zero level sits between an inside and an outside cell.
    return np.where(inside, -(inside_distance - 0.5 * cell), outside_distance - 0.5 * cell).astype(np.float32)


def _lookup(grid: torch.Tensor, points: torch.Tensor, bound: float) -> torch.Tensor:
    """Trilinear values of ``grid`` ([x, y, z] indexed) at world ``points`` (N,3)."""
    # grid_sample reads (x, y, z) coordinates against a (D=z, H=y, W=x) volume: permute the grid.
    volume = grid.permute(2, 1, 0)[None, None]
    coords = (points / bound).reshape(1, -1, 1, 1, 3)
    return F.grid_sample(volume, coords, align_corners=True).reshape(-1)


def fit_to_hull(field: NeuSField, views: Views, bound: float, settings: HullSettings, seed: int,
                device: torch.device, on_step: Optional[Callable[[], None]] = None) -> dict[str, float]:
    """Fit the field's SDF to the hull's signed distance (:func:`fit_to_grid`).

    Returns the hull's volume fraction and the mean absolute error of the last step.
    """
    distance = hull_signed_distance(views, bound, tolerance=settings.tolerance)
    fraction, error = fit_to_grid(field, distance, bound, settings, seed, device, on_step)
    return {"hull_fraction": fraction, "hull_fit_error": error}


def fit_to_grid(field: NeuSField, signed_distance: np.ndarray, bound: float, settings: HullSettings, seed: int,
                device: torch.device, on_step: Optional[Callable[[], None]] = None) -> tuple[float, float]:
    """Fit the field's SDF to a signed-distance grid (R³, [x, y, z], spanning the cube) for
    ``settings.steps`` Adam steps (L1 + eikonal), then set NeuS's variance parameter to
    ``settings.variance``. Returns the grid's inside fraction and the last step's error.

    The colour network is untouched; the photometric training that follows starts from its own
    initialisation. NeuS starts its sphere blurry (variance 0.3, inv_s 20), which lets early steps
    move the surface far; after the fit the surface is already where the grid puts it, and a blurry
    start would spend the first steps eroding thin parts and bulging the rest (smoke, chicken: CD
    0.0087 with 0.3, 0.0061 with 0.5; README: Starting from the hull).
    """
    distance = torch.from_numpy(np.asarray(signed_distance, dtype=np.float32))
    last = distance.shape[0] - 1
    # Cells within two of the surface, in world units; kept on the CPU, where the points are drawn.
    surface = torch.nonzero(distance.abs() <= 2 * bound / last).float() / last * 2 * bound - bound
    if distance.ndim != 3 or len(surface) == 0:
        raise ValueError("the signed-distance grid holds no surface")
    target = distance.to(device)
    generator = torch.Generator().manual_seed(seed)
    field.to(device).train()
    # The SDF network (and the hash tables, at the rate the trainer gives them); colour stays untouched.
    optimizer = field_adam(field, settings.learning_rate, TrainSettings.encoding_learning_rate, field.sdf_net.parameters())
    fit = torch.tensor(float("nan"))
    batch = settings.points
    for _ in range(settings.steps):
        uniform = (torch.rand(batch // 2, 3, generator=generator) * 2 - 1) * bound
        pick = torch.randint(0, len(surface), (batch - batch // 2,), generator=generator)
        near = surface[pick] + torch.randn(len(pick), 3, generator=generator) * NEAR_SURFACE
        points = torch.cat([uniform, near.clamp(-bound, bound)]).to(device)
        sdf, _, grad = field.sdf_and_gradient(points, create_graph=True)
        fit = (sdf - _lookup(target, points, bound)).abs().mean()
        loss = fit + settings.eikonal_weight * ((grad.norm(dim=-1) - 1) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step()
    with torch.no_grad():
        field.variance.fill_(settings.variance)
    # One device sync at the end, not one per step.
    return float((distance < 0).float().mean()), fit.item()
