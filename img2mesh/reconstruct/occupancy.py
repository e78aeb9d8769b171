"""Occupancy-grid sampling: march rays in small fixed steps and keep only samples in occupied cells.

A grid over the bounding cube records where the field's NeuS opacity for one marching step is
above a threshold; it is refreshed every few training steps (an exponential moving average, so a
cell empties only after staying empty). Rays then skip free space and the solid interior, and the
samples that remain are packed (flat, with their ray's index) for ``renderer.render_packed``.

Two implementations with one interface (``update``, ``sample``, ``state_dict``):

* ``NerfaccGrid``: nerfacc's ``OccGridEstimator`` and its CUDA kernels (on a GPU when nerfacc's
  extension builds or is installed pre-built);
* ``TorchGrid``: the same maths in plain PyTorch, on any device (the fallback, and what the tests
  run on the CPU).
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch

from img2mesh.reconstruct.fields import NeuSField
from img2mesh.reconstruct.renderer import cube_near_far

log = logging.getLogger("img2mesh")
Packed = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # ray_indices, t_starts, t_ends


def step_opacity(field: NeuSField, points: torch.Tensor, step: float) -> torch.Tensor:
    """NeuS opacity of one marching step centred on each point, assuming the ray meets the surface
    head-on (the largest opacity a step there can have): whether the cell can matter at all."""
    with torch.no_grad():
        sdf = field.sdf(points)
        inv_s = field.inv_s()
        prev_cdf = torch.sigmoid((sdf + step * 0.5) * inv_s)
        next_cdf = torch.sigmoid((sdf - step * 0.5) * inv_s)
        return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)


def marching_step(bound: float, steps_across: int) -> float:
    """Step length such that ``steps_across`` steps cross the bounding cube's diagonal."""
    return 2 * bound * math.sqrt(3) / steps_across


class TorchGrid(torch.nn.Module):
    """An occupancy grid and ray marcher in plain PyTorch (any device)."""

    backend = "torch"

    def __init__(self, bound: float, resolution: int, step: float, threshold: float = 0.01,
                 decay: float = 0.95) -> None:
        super().__init__()
        self.bound, self.resolution, self.step, self.threshold, self.decay = bound, resolution, step, threshold, decay
        self.register_buffer("occupancy", torch.zeros((resolution,) * 3))
        # every cell counts as occupied until the first update has looked at the field
        self.register_buffer("binary", torch.ones((resolution,) * 3, dtype=torch.bool))

    def _cell_centres(self, jitter: bool) -> torch.Tensor:
        index = torch.stack(torch.meshgrid(*[torch.arange(self.resolution, device=self.occupancy.device)] * 3,
                                           indexing="ij"), -1).reshape(-1, 3).float()
        offset = torch.rand_like(index) if jitter else torch.full_like(index, 0.5)
        return (index + offset) / self.resolution * 2 * self.bound - self.bound

    def update(self, field: NeuSField, chunk: int = 262144) -> None:
        """Refresh the grid from the field (jittered points inside every cell)."""
        points = self._cell_centres(jitter=True)
        fresh = torch.cat([step_opacity(field, part, self.step) for part in points.split(chunk)])
        fresh = fresh.reshape(self.occupancy.shape).to(self.occupancy.dtype)
        self.occupancy = torch.maximum(self.occupancy * self.decay, fresh)
        self.binary = self.occupancy > min(self.threshold, float(self.occupancy.mean()))

    def _occupied(self, points: torch.Tensor) -> torch.Tensor:
        cell = ((points + self.bound) / (2 * self.bound) * self.resolution).floor().long()
        inside = ((cell >= 0) & (cell < self.resolution)).all(-1)
        cell = cell.clamp(0, self.resolution - 1)
        return inside & self.binary[cell[..., 0], cell[..., 1], cell[..., 2]]

    @torch.no_grad()
    def sample(self, origins: torch.Tensor, dirs: torch.Tensor, perturb: bool) -> Packed:
        """Packed samples: fixed steps from each ray's entry into the cube, kept in occupied cells."""
        near, far = cube_near_far(origins, dirs, self.bound)
        count = max(1, int(math.ceil(float((far - near).max()) / self.step)))
        offset = torch.rand(origins.shape[0], 1, device=origins.device) if perturb else 0.5
        t_mid = near[:, None] + (torch.arange(count, device=origins.device)[None] + offset) * self.step
        points = origins[:, None] + dirs[:, None] * t_mid[..., None]
        keep = (t_mid < far[:, None]) & self._occupied(points)
        ray_indices, slot = keep.nonzero(as_tuple=True)  # row-major: sorted by ray
        t = t_mid[ray_indices, slot]
        return ray_indices, t - self.step * 0.5, t + self.step * 0.5


class NerfaccGrid(torch.nn.Module):
    """nerfacc's ``OccGridEstimator`` behind ``TorchGrid``'s interface (CUDA only)."""

    backend = "nerfacc"

    def __init__(self, bound: float, resolution: int, step: float, threshold: float = 0.01,
                 decay: float = 0.95) -> None:
        super().__init__()
        import nerfacc

        self.estimator = nerfacc.OccGridEstimator(roi_aabb=[-bound, -bound, -bound, bound, bound, bound],
                                                  resolution=resolution, levels=1)
        self.bound, self.step, self.threshold, self.decay = bound, step, threshold, decay
        self._updates = 0

    def update(self, field: NeuSField) -> None:
        # n=1: the trainer already decides when to refresh; warm-up covers every cell at first
        self.estimator.update_every_n_steps(step=self._updates, occ_eval_fn=lambda x: step_opacity(field, x, self.step),
                                            occ_thre=self.threshold, ema_decay=self.decay, n=1)
        self._updates += 1

    @torch.no_grad()
    def sample(self, origins: torch.Tensor, dirs: torch.Tensor, perturb: bool) -> Packed:
        ray_indices, t_starts, t_ends = self.estimator.sampling(origins, dirs, render_step_size=self.step,
                                                                stratified=perturb)
        return ray_indices.long(), t_starts, t_ends

    @staticmethod
    def weights(alpha: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
        import nerfacc

        return nerfacc.render_weight_from_alpha(alpha, ray_indices=ray_indices, n_rays=n_rays)[0]


def nerfacc_status() -> tuple[bool, str]:
    """Whether nerfacc's CUDA extension loads here, and why not (may compile it the first time)."""
    import torch as _torch

    if not _torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        from nerfacc.cuda._backend import _C
    except Exception as exc:  # ImportError, or a failed JIT build
        return False, f"nerfacc does not load ({type(exc).__name__}: {exc})".splitlines()[0]
    if _C is None:
        return False, "nerfacc is installed but its CUDA extension is not built (needs nvcc or a pre-built wheel)"
    return True, "nerfacc CUDA extension"


def make_grid(sampler: str, device: torch.device, bound: float, resolution: int,
              steps_across: int) -> Optional[torch.nn.Module]:
    """The occupancy grid ``reconstruct.sampler`` asks for on ``device``; None for dense sampling.

    ``auto`` is dense sampling on every device for now. The grid keeps NeuS's solid interior
    occupied (its opacity tends to 1 inside the surface), so without transmittance-based early
    termination each ray marches hundreds of interior samples, and the grid has not yet been shown
    on a GPU to match the dense sampler's CD/IoU; ``occupancy`` selects it explicitly (nerfacc on
    CUDA when its extension loads, else the PyTorch grid).
    """
    step = marching_step(bound, steps_across)
    if sampler in ("dense", "auto"):
        return None
    if device.type == "cuda":
        usable, why = nerfacc_status()
        if usable:
            return NerfaccGrid(bound, resolution, step).to(device)
        log.warning("reconstruct: %s; using the PyTorch occupancy grid", why)
    return TorchGrid(bound, resolution, step).to(device)


def sampler_summary() -> str:
    """What ``reconstruct.sampler: occupancy`` would use here, without building anything (for doctor)."""
    import importlib.util
    import shutil

    if not torch.cuda.is_available():
        return "PyTorch occupancy grid (no CUDA device)"
    if importlib.util.find_spec("nerfacc") is None:
        return "PyTorch occupancy grid (nerfacc not installed)"
    if importlib.util.find_spec("nerfacc.csrc") is not None:
        return "nerfacc occupancy grid (pre-built extension)"
    if shutil.which("nvcc"):
        return "nerfacc occupancy grid (its CUDA extension is compiled on first use: minutes, once)"
    return "PyTorch occupancy grid (nerfacc needs nvcc or a pre-built wheel to build its extension)"
