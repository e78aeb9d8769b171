"""The refine stage's mechanics without diffusion weights: a blurred texture, the photo's loss alone.

On a shared GSO object (default: chicken) the ground-truth mesh is decimated and UV-unwrapped as the
mesh stage does it, a texture is fitted to its 16 clean views (the best this geometry and atlas can
do: the ceiling), then deliberately blurred. ``refine`` then runs from the blurred texture with only
the reference-view loss at the input camera (``refine.distillation=false``: the photo is view 0,
rendered at 512² as the stage does), once per learning rate. Reported: texture PSNR at the 16 cameras
(all, and the input camera's side: views within 45° of it) before and after, and iterations/s at the
render size on this machine.

This checks what a GPU run cannot be trusted to show by itself: that the gradient of the renders
reaches the right texels and the stage's optimiser moves them towards what the photo shows. The
distillation term's cost is a model count (``cost_model``), not a CPU timing.

    python benchmarks/refine_mechanics.py                       # chicken, 512², 200 iterations, 3 rates
    python benchmarks/refine_mechanics.py --object lion --iterations 400 --rates 0.01
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from img2mesh.refine.render import TexturedMesh

GSO = Path(os.environ.get("IMG2MESH_GSO_DIR", Path(__file__).resolve().parents[2] / "shared" / "gso"))
INPUT_SIDE = (0, 1, 2, 14, 15)  # views within 45 degrees of azimuth of the input camera (view 0)


def textured_ground_truth(name: str, faces: int, texture_size: int) -> "TexturedMesh":
    """The object's normalised GT mesh, decimated to ``faces`` and unwrapped (xatlas), untextured yet."""
    from img2mesh.evaluation.gso import GSO_ANGLES_DEG, normalise_ground_truth
    from img2mesh.evaluation.metrics import load_mesh
    from img2mesh.mesh.unwrap import unwrap
    from img2mesh.refine.render import TexturedMesh

    mesh = normalise_ground_truth(load_mesh(GSO / name / "model.obj"), GSO_ANGLES_DEG[name])
    if len(mesh.faces) > faces:
        mesh = mesh.simplify_quadric_decimation(face_count=faces)
    atlas = unwrap(np.asarray(mesh.vertices), np.asarray(mesh.faces), texture_size)
    vertices = np.asarray(mesh.vertices)[atlas.vertex_map]
    return TexturedMesh(vertices, atlas.faces, atlas.uvs, np.full((texture_size, texture_size, 3), 255, np.uint8))


def clean_views(name: str, size: int) -> torch.Tensor:
    """The 16 ground-truth renders on white, (16, 3, size, size) in [0, 1]."""
    from PIL import Image

    from img2mesh.utils.images import composite_on_white

    views = [composite_on_white(Image.open(GSO / name / f"{i:03d}.png").convert("RGBA")) for i in range(16)]
    images = torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2)
    return images if size == images.shape[-1] else F.interpolate(images, size=(size, size), mode="bicubic").clamp(0, 1)


def psnr_at_cameras(texture: torch.Tensor, rasters: list, views: torch.Tensor) -> np.ndarray:
    """PSNR (dB) of the renders at each camera against the views."""
    from img2mesh.refine.render import render

    with torch.no_grad():
        errors = [F.mse_loss(render(texture, r), views[i:i + 1]).item() for i, r in enumerate(rasters)]
    return np.array([-10 * math.log10(max(e, 1e-12)) for e in errors])


def fit_texture(texture: torch.Tensor, rasters: list, views: torch.Tensor, iterations: int) -> torch.Tensor:
    """The texture that best explains all 16 views through this renderer (Adam on the texels)."""
    from img2mesh.refine.render import render

    texture = torch.nn.Parameter(texture.clone())
    optimizer = torch.optim.Adam([texture], lr=0.05)
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = sum(F.mse_loss(render(texture, r), views[i:i + 1]) for i, r in enumerate(rasters))
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            texture.clamp_(0, 1)
    return texture.detach()


def blurred(texture: torch.Tensor, sigma: float) -> torch.Tensor:
    from scipy.ndimage import gaussian_filter

    values = texture[0].numpy()
    return torch.from_numpy(np.stack([gaussian_filter(c, sigma) for c in values]))[None].float()


def cost_model(iterations: int, l_steps: int) -> dict[str, float]:
    """UNet and VAE calls of RGSD (see docs/stages.md): fixed cameras (every other iteration) cost one
    VAE encode with its backward; a random camera inverts its latent for l steps (one UNet call each)
    and denoises with the reference injected down to τ ~ U{0..l-1} (two calls per step when guided:
    l - τ steps, l/2 + 1/2 on average)."""
    random = iterations / 2
    unet = random * (l_steps + 2 * (l_steps + 1) / 2)
    return {"unet_calls": unet, "unet_calls_per_iteration": unet / iterations, "vae_encodes": iterations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--object", default="chicken")
    parser.add_argument("--faces", type=int, default=20000)
    parser.add_argument("--texture-size", type=int, default=512)
    parser.add_argument("--render-size", type=int, default=512, help="the photo camera's render (SD-2-depth: 512)")
    parser.add_argument("--blur", type=float, default=3.0, help="Gaussian blur of the start texture, in texels")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.003, 0.01, 0.03])
    args = parser.parse_args()

    from img2mesh.refine.render import rasterise
    from img2mesh.refine.rgsd import RGSDSettings, Scene, TextureRefiner
    from img2mesh.utils import cameras

    torch.manual_seed(0)
    device = torch.device("cpu")
    mesh = textured_ground_truth(args.object, args.faces, args.texture_size)
    views = clean_views(args.object, 256)
    rasters = [rasterise(mesh, cameras.intrinsics(256), pose, 256, device) for pose in cameras.target_poses()]
    start = torch.ones(1, 3, args.texture_size, args.texture_size)
    fitted = fit_texture(start, rasters, views, 300)
    blur = blurred(fitted, args.blur)
    photo_camera = rasterise(mesh, cameras.intrinsics(args.render_size), cameras.target_poses()[0],
                             args.render_size, device)
    photo = clean_views(args.object, args.render_size)[:1]
    scene = Scene([], [], None, photo_camera, photo, None, None)
    rows = [("fitted to the 16 views (ceiling)", psnr_at_cameras(fitted, rasters, views), float("nan")),
            (f"blurred (sigma {args.blur:g} texels): the start", psnr_at_cameras(blur, rasters, views), float("nan"))]
    for rate in args.rates:
        settings = RGSDSettings(args.iterations, rate, 1.0, False, args.iterations + 1, 0)
        refiner = TextureRefiner((blur[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), settings, device)
        began = time.perf_counter()
        refiner.run(None, scene, None)
        rate_s = args.iterations / (time.perf_counter() - began)
        rows.append((f"refined, photo loss only, lr {rate:g}", psnr_at_cameras(refiner.texture.detach(), rasters, views),
                     rate_s))
    print(f"{args.object}: {len(mesh.faces)} faces, {args.texture_size}² texture, photo camera at "
          f"{args.render_size}², {args.iterations} iterations")
    print(f"{'texture':44s} {'PSNR 16':>8s} {'input side':>10s} {'view 0':>7s} {'it/s':>6s}")
    for label, psnr, speed in rows:
        print(f"{label:44s} {psnr.mean():8.2f} {psnr[list(INPUT_SIDE)].mean():10.2f} {psnr[0]:7.2f} {speed:6.1f}")
    model = cost_model(1000, 12)
    print(f"GPU cost model (1000 iterations, l = 12): {model['unet_calls']:.0f} UNet calls "
          f"({model['unet_calls_per_iteration']:.2f} per iteration) and {model['vae_encodes']} VAE encodes with "
          f"their backward at 512²")


if __name__ == "__main__":
    main()
