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
distillation term's cost is a model count (``cost_model``), not a CPU timing. Three more cases
(``--case``) are the ones that failed before the stage changed:

* ``misregistered``: the photo sits a few pixels off the mesh (view 0 shifted by SHIFT_PX); the photo's
  loss at the unregistered camera over the whole frame, against the registered camera (the mesh stage's
  registration) inside the eroded overlap of the two silhouettes;
* ``undersampled``: a 2048² atlas behind 512² renders: the share of chart texels that get a gradient per
  step, PSNR and the texture's high-frequency noise, without and with supersampled renders;
* ``seams``: the gutters between charts after refining: how far their colour is from their chart's
  (what mip-mapped viewers blend in), without and with re-padding.

    python benchmarks/refine_mechanics.py                       # chicken, 512², 200 iterations, 3 rates
    python benchmarks/refine_mechanics.py --object lion --iterations 400 --rates 0.01
    python benchmarks/refine_mechanics.py --case misregistered undersampled seams
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
    from img2mesh.mesh.export import load_mesh
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


SHIFT_PX = (4.0, -3.0)  # the misregistered photo's offset, in pixels of a 256² view


def shifted(images: torch.Tensor, shift: tuple[float, float]) -> torch.Tensor:
    """Images (N, 3, H, W) on white moved by ``shift`` pixels of a 256² image (bilinear, white outside)."""
    theta = torch.tensor([[1.0, 0.0, -2 * shift[0] / 256], [0.0, 1.0, -2 * shift[1] / 256]])[None].expand(len(images), 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1
    return moved.clamp(0, 1)


def high_frequency(texture: torch.Tensor, charts: np.ndarray) -> float:
    """Mean |texture − its Gaussian blur (σ 1 texel)| inside the charts, in 0..255: speckle that neighbouring
    texels getting unrelated gradients leave."""
    values = texture[0].numpy()
    smooth = blurred(texture, 1.0)[0].numpy()
    return float(np.abs(values - smooth).mean(0)[charts].mean() * 255)


def gutter_step(texture: np.ndarray, charts: np.ndarray) -> float:
    """Mean colour distance (0..255) of the texels just outside the charts from their nearest chart texel."""
    from scipy import ndimage

    rows, cols = ndimage.distance_transform_edt(~charts, return_distances=False, return_indices=True)
    gutter = ndimage.binary_dilation(charts, iterations=2) & ~charts
    nearest = texture[rows, cols]
    return float(np.abs(texture.astype(np.float64) - nearest)[gutter].mean())


def run_refiner(start: torch.Tensor, scene, iterations: int, rate: float, charts: np.ndarray | None = None):
    from img2mesh.refine.rgsd import RGSDSettings, TextureRefiner

    settings = RGSDSettings(iterations, rate, 1.0, False, iterations + 1, 0)
    refiner = TextureRefiner((start[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), settings,
                             torch.device("cpu"))
    if charts is not None:
        refiner.charts = torch.from_numpy(charts)
    began = time.perf_counter()
    refiner.run(None, scene, None)
    return refiner, iterations / (time.perf_counter() - began)


def case_misregistered(args, mesh, rasters, views, blur) -> list:
    """The photo shifted off the mesh: unregistered whole-frame loss vs registered, region-restricted loss."""
    from img2mesh.mesh.photo import REGISTER_SIZE, register_photo
    from img2mesh.refine.render import rasterise
    from img2mesh.refine.rgsd import Scene, photo_region
    from img2mesh.utils import cameras

    device = torch.device("cpu")
    size = args.render_size
    photo = shifted(clean_views(args.object, size)[:1], SHIFT_PX)
    mask_small = F.interpolate(shifted(clean_views(args.object, REGISTER_SIZE)[:1], SHIFT_PX), size=REGISTER_SIZE)
    photo_mask_small = (mask_small[0] < 0.93).any(0).numpy()
    camera = register_photo(mesh.vertices, mesh.faces, photo_mask_small, cameras.ELEVATION_DEG, device,
                            search_elevation=False)
    plain = rasterise(mesh, cameras.intrinsics(size), cameras.target_poses()[0], size, device)
    registered = rasterise(mesh, *camera.at_size(size), size, device)
    photo_mask = (photo[0] < 0.93).any(0).numpy()
    region = torch.from_numpy(photo_region(registered.mask.numpy(), photo_mask, max(1, round(2 * size / 256))))
    rows = []
    for label, scene in (("unregistered, whole frame", Scene([], [], None, plain, photo, None, None)),
                         (f"registered (IoU {camera.iou_before:.3f} -> {camera.iou_after:.3f}), overlap only",
                          Scene([], [], None, registered, photo, None, None, photo_region=region))):
        refiner, speed = run_refiner(blur, scene, args.iterations, 0.01)
        rows.append((f"misregistered photo: {label}", psnr_at_cameras(refiner.texture.detach(), rasters, views), speed))
    return rows


def case_undersampled(args) -> list:
    """A 2048² atlas and 512² renders, without and with supersampling."""
    from img2mesh.refine.diagnostics import chart_texels
    from img2mesh.refine.render import rasterise
    from img2mesh.refine.rgsd import Scene
    from img2mesh.utils import cameras

    device = torch.device("cpu")
    mesh = textured_ground_truth(args.object, args.faces, 2048)
    views = clean_views(args.object, 256)
    rasters = [rasterise(mesh, cameras.intrinsics(256), pose, 256, device) for pose in cameras.target_poses()]
    fitted = fit_texture(torch.ones(1, 3, 2048, 2048), rasters, views, 150)
    blur = blurred(fitted, args.blur * 4)
    charts = chart_texels(mesh, device)
    photo = clean_views(args.object, 512)[:1]
    rows = [(f"2048² atlas, blurred (sigma {args.blur * 4:g} texels): the start, HF noise {high_frequency(blur, charts):.2f}",
             psnr_at_cameras(blur, rasters, views), float("nan"))]
    for factor in (1, 4):
        camera = rasterise(mesh, cameras.intrinsics(512 * factor), cameras.target_poses()[0], 512 * factor, device)
        scene = Scene([], [], None, camera, photo, None, None, supersample=factor, model_size=512)
        refiner, speed = run_refiner(blur, scene, args.iterations, 0.01, charts)
        texture = refiner.texture.detach()
        share = float(np.mean(refiner.touched_per_step))
        rows.append((f"2048² atlas, 512² render x{factor}: {100 * share:.1f} % texels/step, HF noise "
                     f"{high_frequency(texture, charts):.2f}", psnr_at_cameras(texture, rasters, views), speed))
    rows.append((f"2048² atlas, fitted ceiling: HF noise {high_frequency(fitted, charts):.2f}",
                 psnr_at_cameras(fitted, rasters, views), float("nan")))
    return rows


def case_seams(args, mesh, blur, scene) -> list[str]:
    """The gutters' colour step after refining, without and with the stage's re-padding."""
    from img2mesh.mesh.texture import pad_charts
    from img2mesh.refine.diagnostics import chart_texels

    charts = chart_texels(mesh, torch.device("cpu"))
    start = (blur[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    padded_start = pad_charts(start, charts)
    refiner, _ = run_refiner(torch.from_numpy(padded_start).permute(2, 0, 1)[None].float() / 255, scene,
                             args.iterations, 0.01)
    raw = refiner.texture_uint8()
    return [f"seams: gutter colour step before refining {gutter_step(padded_start, charts):.2f}, after refining "
            f"{gutter_step(raw, charts):.2f} (kept gutters), {gutter_step(pad_charts(raw, charts), charts):.2f} "
            f"(re-padded) of 255"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--object", default="chicken")
    parser.add_argument("--faces", type=int, default=20000)
    parser.add_argument("--texture-size", type=int, default=512)
    parser.add_argument("--render-size", type=int, default=512, help="the photo camera's render (SD-2-depth: 512)")
    parser.add_argument("--blur", type=float, default=3.0, help="Gaussian blur of the start texture, in texels")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.003, 0.01, 0.03])
    parser.add_argument("--case", nargs="+", default=["blur"], choices=["blur", "misregistered", "undersampled", "seams"])
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
    notes = []
    if "misregistered" in args.case:
        rows += case_misregistered(args, mesh, rasters, views, blur)
    if "undersampled" in args.case:
        rows += case_undersampled(args)
    if "seams" in args.case:
        notes += case_seams(args, mesh, blur, scene)
    for rate in (args.rates if "blur" in args.case else []):
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
    for note in notes:
        print(note)
    model = cost_model(1000, 12)
    print(f"GPU cost model (1000 iterations, l = 12): {model['unet_calls']:.0f} UNet calls "
          f"({model['unet_calls_per_iteration']:.2f} per iteration) and {model['vae_encodes']} VAE encodes with "
          f"their backward at 512²")


if __name__ == "__main__":
    main()
