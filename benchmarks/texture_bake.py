"""Leave-views-out texture benchmark: how well the exported texture shows the object at cameras the fit
never saw, for every way of colouring the same mesh.

For each shared GSO object and degradation level (``img2mesh/evaluation/degrade.py``; level 0 drops the
alpha only), reconstruct + mesh run on 12 of the 16 views (2, 6, 10 and 14 left out) with ``--preset``.
On the exported mesh and its UVs, textures are baked with each colour source, re-rendered unlit at the
left-out cameras and scored against the *clean* views there: PSNR and SSIM inside the intersection of
both masks, and full-frame PSNR (on white). Beside them: the field's own volume render at those cameras,
and the training views projected at render time onto the mesh (depth-tested, cos⁴-weighted mean: the
ceiling of a plain projection bake). With ``--photo``, a clean render of view 0 stands in for the photo
(registered to the mesh's silhouette after a known shift): PSNR inside the mask at the input camera.

    python benchmarks/texture_bake.py --objects chicken lion --levels 0 2
    python benchmarks/texture_bake.py --levels 0 2 --photo --json bake.json   # the docs/benchmarks.md table
    python benchmarks/texture_bake.py --objects chicken lion --levels 2 --sizes 256 512 1024   # atlas size
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from img2mesh.app import load_config, reconstruct_stages  # noqa: E402
from img2mesh.evaluation.gso import GSO_ANGLES_DEG  # noqa: E402
from img2mesh.mesh.bake import Projector, Source, SurfaceColours  # noqa: E402
from img2mesh.mesh.export import (
    load_mesh,  # noqa: E402
    to_world_frame,  # noqa: E402
)
from img2mesh.mesh.preview import render  # noqa: E402
from img2mesh.mesh.texture import bake  # noqa: E402
from img2mesh.mesh.unwrap import Unwrapped  # noqa: E402
from img2mesh.pipeline.runner import Runner  # noqa: E402
from img2mesh.reconstruct.fitted import load_fitted  # noqa: E402
from img2mesh.reconstruct.storage import load_field  # noqa: E402
from img2mesh.utils import cameras  # noqa: E402
from img2mesh.utils.raster import rasterize  # noqa: E402
from reconstruct_gso import GSO, degraded  # noqa: E402

LEFT_OUT = (2, 6, 10, 14)
TRAIN = tuple(i for i in range(16) if i not in LEFT_OUT)
CPU = torch.device("cpu")
PHOTO_SHIFT_PX = (4.0, -3.0)  # the stand-in photo is moved by this much; registration must find it


def training_folder(name: str, level: int, seed: int, into: Path) -> Path:
    """The 12 training views (degraded at ``level``, on white) with their cameras."""
    all_views = degraded(GSO / name, level, seed, into / "all")
    folder = into / "train"
    folder.mkdir(parents=True)
    for k, i in enumerate(TRAIN):
        (folder / f"{k:02d}.png").write_bytes((all_views / f"{i:03d}.png").read_bytes())
    poses = cameras.target_poses()[list(TRAIN)]
    (folder / "cameras.json").write_text(json.dumps({"K": cameras.intrinsics().tolist(), "poses": poses.tolist(),
                                                     "image_size": 256}))
    return folder


def clean_view(name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean ground-truth view: RGB on white (float) and its mask (bool)."""
    rgba = np.asarray(Image.open(GSO / name / f"{index:03d}.png").convert("RGBA")).astype(np.float64) / 255
    alpha = rgba[..., 3:]
    return rgba[..., :3] * alpha + 1 - alpha, alpha[..., 0] > 0.5


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM per pixel (Gaussian window σ 1.5) of two H,W,3 images in [0, 1], averaged over channels."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = []
    for ch in range(3):
        x, y = a[..., ch], b[..., ch]
        mx, my = gaussian_filter(x, 1.5), gaussian_filter(y, 1.5)
        vx = gaussian_filter(x * x, 1.5) - mx * mx
        vy = gaussian_filter(y * y, 1.5) - my * my
        cov = gaussian_filter(x * y, 1.5) - mx * my
        out.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return np.mean(out, 0)


def score(image: np.ndarray, covered: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """PSNR / SSIM inside both masks, and full-frame PSNR (H,W,3 in [0, 1])."""
    both = covered & mask
    inside = float(((image - truth)[both] ** 2).mean()) if both.any() else 1.0
    full = float(((image - truth) ** 2).mean())
    return {"psnr_in": 10 * math.log10(1 / max(inside, 1e-10)), "psnr_full": 10 * math.log10(1 / max(full, 1e-10)),
            "ssim_in": float(ssim_map(image, truth)[both].mean()) if both.any() else 0.0}


def mean_scores(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def render_textured(mesh, texture: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    from img2mesh.mesh.texture import textured_mesh

    K, pose = cameras.intrinsics(), cameras.target_poses()[index]
    textured = textured_mesh(mesh["vertices"], mesh["unwrapped"], texture)
    image = render(textured, K, pose, 256, shading=False).astype(np.float64) / 255
    return image, mesh_mask(mesh, K, pose)


def mesh_mask(mesh, K, pose, size: int = 256) -> np.ndarray:
    raster = rasterize(torch.tensor(mesh["vertices"], dtype=torch.float32), torch.tensor(mesh["faces"]),
                       torch.tensor(K, dtype=torch.float32), torch.tensor(pose, dtype=torch.float32), size, size)
    return raster.mask.numpy()


def normal_query(field) -> Callable[[np.ndarray], np.ndarray]:
    """The bake before the projection one: the colour network asked along −normal (kept here to compare)."""
    def colours(points: np.ndarray) -> np.ndarray:
        out = []
        for part in torch.from_numpy(np.asarray(points, dtype=np.float32)).split(65536):
            _, features, grad = field.sdf_and_gradient(part, create_graph=False)
            normal = F.normalize(grad, dim=-1)
            with torch.no_grad():
                out.append(field.color(part, normal, -normal, features.detach()).float())
        return torch.cat(out).numpy()
    return colours


def field_render(field, index: int, size: int = 256) -> np.ndarray:
    """The field's own volume render at a camera (on white)."""
    from img2mesh.reconstruct.renderer import RenderSettings, render_rays
    from img2mesh.reconstruct.views import pixel_rays

    K, pose = cameras.intrinsics(size), cameras.target_poses()[index]
    origin, dirs = pixel_rays(K, pose, size, size)
    d = torch.tensor(dirs.reshape(-1, 3), dtype=torch.float32)
    o = torch.tensor(origin, dtype=torch.float32).expand_as(d)
    settings = RenderSettings(coarse_samples=32, fine_samples=32, bound=0.6)
    out = []
    with torch.no_grad():
        for a, b in zip(o.split(4096), d.split(4096)):
            out.append(render_rays(field, a, b, settings)["color"])
    return torch.cat(out).numpy().reshape(size, size, 3).astype(np.float64)


def projection_ceiling(mesh, views: list[Source], index: int) -> np.ndarray:
    """The training views projected onto the mesh at render time: each pixel's surface point coloured by
    the depth-tested, cos⁴-weighted mean of the views that see it (no colour or pose correction)."""
    K, pose = cameras.intrinsics(), cameras.target_poses()[index]
    raster = rasterize(torch.tensor(mesh["vertices"], dtype=torch.float32), torch.tensor(mesh["faces"]),
                       torch.tensor(K, dtype=torch.float32), torch.tensor(pose, dtype=torch.float32), 256, 256)
    covered = raster.mask.numpy()
    face = raster.face.numpy()[covered]
    bary = raster.bary.numpy()[covered].astype(np.float64)
    corners = mesh["vertices"][mesh["faces"][face]]
    points = (corners * bary[..., None]).sum(1)
    tri = mesh["vertices"][mesh["faces"][face]]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(min=1e-12)
    total = np.zeros(len(points))
    colour = np.zeros((len(points), 3))
    for projector in (Projector(v, mesh["vertices"], mesh["faces"], CPU) for v in views):
        c, cos, _ = projector.sample(points, normals)
        w = np.maximum(cos, 0) ** 4
        total += w
        colour += w[:, None] * c
    image = np.ones((256, 256, 3))
    image[covered] = np.where(total[:, None] > 0, colour / np.maximum(total, 1e-12)[:, None], 1.0)
    return image


def run_object(name: str, level: int, seed: int, preset: str, photo: bool, keep: Path | None,
               sizes: tuple[int, ...] = ()) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = training_folder(name, level, seed, tmp / "views")
        config = load_config(preset, overrides=["mesh.formats=[glb]", "mesh.preview=false"])
        runner = Runner(reconstruct_stages(), config, "cpu")
        start = time.perf_counter()
        result = runner.run(folder, tmp / "result")
        runner.close()
        if not result.ok:
            raise SystemExit(f"{name}: {result.error}")
        run_seconds = time.perf_counter() - start
        manifest = json.loads((tmp / "result" / "img2mesh.json").read_text())
        if keep is not None:
            import shutil

            shutil.copytree(tmp / "result", keep / f"{name}_L{level}", dirs_exist_ok=True)
        glb = to_world_frame(load_mesh(tmp / "result" / "mesh.glb"))
        texture_size = glb.visual.material.baseColorTexture.size[0]
        mesh = {"vertices": np.asarray(glb.vertices, dtype=np.float64), "faces": np.asarray(glb.faces),
                "unwrapped": Unwrapped(np.arange(len(glb.vertices)), np.asarray(glb.faces), np.asarray(glb.visual.uv))}
        field = load_field(tmp / "result" / "reconstruct", "cpu")
        fitted = load_fitted(tmp / "result" / "reconstruct")
        given = [Source(fitted.images[k], fitted.masks[k], fitted.Ks[k], cameras.target_poses()[i], f"view {i}")
                 for k, i in enumerate(TRAIN)]
        corrected = [Source(fitted.corrected(k), fitted.masks[k], fitted.Ks[k], fitted.poses[k], f"view {i}")
                     for k, i in enumerate(TRAIN)]
        args = (mesh["vertices"], mesh["faces"])
        variants: dict[str, Callable] = {
            "-normal (before)": lambda: normal_query(field),
            "field, trained directions": lambda: SurfaceColours(field, CPU, corrected, *args, mode="field"),
            "views mean": lambda: SurfaceColours(field, CPU, corrected, *args, how="mean"),
            "views median": lambda: SurfaceColours(field, CPU, corrected, *args, how="median"),
            "views robust (default)": lambda: SurfaceColours(field, CPU, corrected, *args, how="robust"),
            "views robust, given cameras, uncorrected": lambda: SurfaceColours(field, CPU, given, *args, how="robust"),
        }
        truths = {i: clean_view(name, i) for i in (0, *LEFT_OUT)}
        for label, make in variants.items():
            started = time.perf_counter()
            texture, _ = bake(mesh["vertices"], mesh["unwrapped"], texture_size, make(), CPU)
            seconds = time.perf_counter() - started
            per_camera = [score(*render_textured(mesh, texture, i), *truths[i]) for i in LEFT_OUT]
            rows.append({"object": name, "level": level, "method": label, **mean_scores(per_camera),
                         "seconds": seconds})
        for label, images in (("field volume render", [field_render(field, i) for i in LEFT_OUT]),
                              ("views projected at render time", [projection_ceiling(mesh, given, i) for i in LEFT_OUT])):
            per_camera = [score(image, mesh_mask(mesh, cameras.intrinsics(), cameras.target_poses()[i]), *truths[i])
                          for image, i in zip(images, LEFT_OUT)]
            rows.append({"object": name, "level": level, "method": label, **mean_scores(per_camera), "seconds": 0.0})
        for size in sizes:  # the default source at other atlas sizes, each unwrapped for its size
            from img2mesh.mesh.unwrap import unwrap

            resized = dict(mesh, unwrapped=unwrap(mesh["vertices"], mesh["faces"], size))
            started = time.perf_counter()
            colours = SurfaceColours(field, CPU, corrected, *args)
            texture, _ = bake(resized["vertices"], resized["unwrapped"], size, colours, CPU)
            seconds = time.perf_counter() - started
            per_camera = [score(*render_textured(resized, texture, i), *truths[i]) for i in LEFT_OUT]
            rows.append({"object": name, "level": level, "method": f"views robust, {size}² atlas",
                         **mean_scores(per_camera), "seconds": seconds})
        if photo:
            rows += photo_rows(name, level, mesh, field, corrected, texture_size, truths[0])
        for row in rows:
            row["reconstruct_seconds"] = run_seconds
            row["mesh_bake_seconds"] = manifest["stages"]["mesh"].get("info", {}).get("bake_seconds")
    return rows


def photo_rows(name, level, mesh, field, views, texture_size, truth) -> list[dict]:
    """View 0's clean render, shifted by PHOTO_SHIFT_PX, as the photo: registered, then projected."""
    from img2mesh.mesh.photo import register_photo

    image, mask = truth
    matrix = np.float32([[1, 0, PHOTO_SHIFT_PX[0]], [0, 1, PHOTO_SHIFT_PX[1]]])
    import cv2

    shifted = cv2.warpAffine(image.astype(np.float32), matrix, (256, 256), flags=cv2.INTER_LINEAR,
                             borderValue=(1.0, 1.0, 1.0))
    shifted_mask = cv2.warpAffine(mask.astype(np.float32), matrix, (256, 256), flags=cv2.INTER_LINEAR) >= 0.5
    camera = register_photo(mesh["vertices"], mesh["faces"], shifted_mask, cameras.ELEVATION_DEG, CPU)
    K, pose = camera.at_size(256)
    photo = Source(shifted, shifted_mask.astype(np.float32), K, pose, "photo")
    rows = []
    for label, source in (("input camera: views only", None), ("input camera: views + photo", photo)):
        colours = SurfaceColours(field, CPU, views, mesh["vertices"], mesh["faces"], photo=source)
        started = time.perf_counter()
        texture, _ = bake(mesh["vertices"], mesh["unwrapped"], texture_size, colours, CPU)
        seconds = time.perf_counter() - started
        rendered, covered = render_textured(mesh, texture, 0)
        # scored against the unshifted truth at the input camera (the registered camera renders unshifted)
        rows.append({"object": name, "level": level, "method": label, **score(rendered, covered, image, mask),
                     "seconds": seconds, "iou_before": camera.iou_before, "iou_after": camera.iou_after,
                     "shift_found": camera.shift_px})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", nargs="+", default=["bell", "chicken", "lion", "school_bus2", "sofa", "teapot"],
                        choices=sorted(GSO_ANGLES_DEG))
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 2], choices=[0, 1, 2, 3])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--photo", action="store_true", help="also score the photo at the input camera")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="keep each run folder as KEEP/NAME_L<level>")
    parser.add_argument("--sizes", type=int, nargs="*", default=[], help="also bake the default source into atlases "
                                                                         "of these sizes (unwrapped for each)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("IMG2MESH_THREADS", torch.get_num_threads())))
    results: list[dict] = []
    print(f"{'object':12s} {'L':>1s} {'method':42s} {'PSNR in':>8s} {'SSIM in':>8s} {'PSNR full':>9s} {'s':>6s}")
    for level in args.levels:
        for name in args.objects:
            for row in run_object(name, level, args.seed, args.preset, args.photo, args.keep, tuple(args.sizes)):
                results.append(row)
                print(f"{name:12s} {level:1d} {row['method']:42s} {row['psnr_in']:8.2f} {row['ssim_in']:8.3f} "
                      f"{row['psnr_full']:9.2f} {row['seconds']:6.1f}", flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    print("\nmeans")
    for level in args.levels:
        methods = list(dict.fromkeys(r["method"] for r in results if r["level"] == level))
        for method in methods:
            rows = [r for r in results if r["level"] == level and r["method"] == method]
            m = mean_scores([{k: r[k] for k in ("psnr_in", "ssim_in", "psnr_full", "seconds")} for r in rows])
            print(f"{'mean':12s} {level:1d} {method:42s} {m['psnr_in']:8.2f} {m['ssim_in']:8.3f} {m['psnr_full']:9.2f} "
                  f"{m['seconds']:6.1f}")


if __name__ == "__main__":
    main()
