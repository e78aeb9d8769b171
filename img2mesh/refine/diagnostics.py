"""What a refinement can be checked by without looking at the weights' judgement (``refine.json``, panel).

* how well the mesh sits on the photo: silhouette IoU of the mesh at the (registered) photo camera
  against the photo's mask, and at each fixed camera against its RGNV target's own silhouette;
* how far the renders are from their targets: mean |z₀ − x̃₀| of the latents inside the object and in a
  band along its silhouette (misregistered targets show up as a large band value);
* which texels the loop can reach: the charts' texels (``chart_texels``) against those that received a
  gradient (counted by ``rgsd.TextureRefiner``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from img2mesh.hifi123.components import DepthDiffusion
    from img2mesh.refine.render import TexturedMesh
    from img2mesh.refine.rgsd import Scene


def chart_texels(mesh: "TexturedMesh", device: torch.device) -> np.ndarray:
    """(T, T) bool: the atlas texels some UV triangle covers."""
    from img2mesh.mesh.texture import rasterize_uv

    size = mesh.texture.shape[0]
    return rasterize_uv(mesh.uvs, mesh.faces, size, device).mask.cpu().numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def latent_masks(coverage: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The object's interior and the band along its silhouette (1 latent pixel each side) at the latent's
    ``size``, from a raster's coverage."""
    from scipy import ndimage

    inside = F.interpolate(coverage.float()[None, None], size=(size, size), mode="area")[0, 0].cpu().numpy() >= 0.5
    band = ndimage.binary_dilation(inside) & ~ndimage.binary_erosion(inside)
    return inside & ~band, band


def diagnostics(model: Optional["DepthDiffusion"], scene: "Scene", texture: torch.Tensor) -> dict[str, Any]:
    """The checks above for ``texture`` (1, 3, T, T in [0, 1]); the latent ones need the model and targets."""
    from img2mesh.hifi123.distillation import latent_of
    from img2mesh.utils.images import white_background_mask

    facts: dict[str, Any] = {}
    if scene.photo_mask is not None and scene.photo_coverage is not None:
        facts["photo_silhouette_iou"] = round(iou(scene.photo_coverage, scene.photo_mask), 4)
    if model is None or scene.targets is None:
        return facts
    inside_err, band_err, target_iou = [], [], []
    with torch.no_grad():
        for raster, target in zip(scene.fixed, scene.targets):
            z0 = latent_of(model, scene.image(texture, raster), grad=False)[0]
            error = (z0 - target.to(z0)).abs().mean(0).cpu().numpy()
            inside, band = latent_masks(raster.mask, error.shape[-1])
            inside_err.append(float(error[inside].mean()) if inside.any() else 0.0)
            band_err.append(float(error[band].mean()) if band.any() else 0.0)
            decoded = model.decode(target[None].to(model.dtype)).float()[0].permute(1, 2, 0).cpu().numpy()
            silhouette = white_background_mask((decoded + 1) / 2)
            coverage = F.interpolate(raster.mask.float()[None, None], size=silhouette.shape, mode="area")[0, 0]
            target_iou.append(iou(silhouette, coverage.cpu().numpy() >= 0.5))
    facts.update(latent_error_inside=round(float(np.mean(inside_err)), 5),
                 latent_error_band=round(float(np.mean(band_err)), 5),
                 target_silhouette_iou=[round(v, 4) for v in target_iou])
    return facts
