"""The refine stage: HiFi-123's RGSD on the mesh stage's texture; the geometry stays as it is.

Off by default (``refine.enabled``; the ``quality`` preset turns it on). For every mesh the mesh stage
made, its UV texture (the bake from the views and the photo) is optimised (``refine/rgsd.py``) so that
renders look like reference-guided enhancements of themselves, with the photo's own loss at the input
camera as the mesh stage registered it; the refined ``mesh.glb`` (and OBJ) replace the mesh stage's at
the top of OUT, ``before_after.png`` shows the fixed cameras before (top) and after, and
``refine.json`` holds diagnostics that need no weights to read (``refine/diagnostics.py``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from img2mesh.hifi123.config import SD2DepthConfig
from img2mesh.hifi123.runtime import MODEL_NAME
from img2mesh.pipeline.contract import Stage, StageContext
from img2mesh.refine.config import RefineConfig
from img2mesh.refine.panel import panel
from img2mesh.utils.files import atomic_save_image, atomic_write_json

if TYPE_CHECKING:
    import torch

    from img2mesh.hifi123.components import DepthDiffusion
    from img2mesh.hifi123.rgnv import RGNVSettings
    from img2mesh.pipeline.config import Config
    from img2mesh.refine.render import TexturedMesh
    from img2mesh.refine.rgsd import Scene

CONFIG_KEYS = ("refine", "sd2_depth", "segment.crop_size", "reconstruct.select", "mesh.formats", "run.seed")
CHECKPOINT = "checkpoint.pt"
EXPORTED = ("glb", "obj")  # the formats that carry a UV texture


def config_values(config: "Config") -> dict[str, Any]:
    """Switched off, the stage's other settings change nothing."""
    if not config.refine.enabled:
        return {"refine.enabled": False}
    return {key: config.get(key) for key in CONFIG_KEYS}


def check_config(config: "Config") -> None:
    from img2mesh.errors import UsageError
    from img2mesh.hifi123.rgnv import check_schedule

    cfg = config.refine
    if not cfg.enabled:
        return
    check_schedule(cfg, "refine.")
    if not config.mesh.texture or not set(EXPORTED) & set(config.mesh.formats):
        raise UsageError("refine optimises the UV texture: it needs mesh.texture on and glb or obj in mesh.formats")


def render_size(config: "Config") -> int:
    """``refine.render_size`` resolved: the model's own size for "auto"."""
    from img2mesh.hifi123.config import model_size

    size = config.refine.render_size
    return size if size != "auto" else model_size(config.sd2_depth)


MAX_SUPERSAMPLE = 4


def supersample(config: "Config", texture_size: int, size: int) -> int:
    """``refine.supersample`` resolved: for "auto", enough that the render has about as many pixels across
    as the atlas has texels (1 to MAX_SUPERSAMPLE)."""
    factor = config.refine.supersample
    if factor != "auto":
        return int(factor)
    return int(min(max(math.ceil(texture_size / size), 1), MAX_SUPERSAMPLE))


def fixed_targets(ctx: StageContext, model: "DepthDiffusion", scene: "Scene", texture: "torch.Tensor",
                  settings: "RGNVSettings") -> "torch.Tensor":
    """x̃₀ of the fixed cameras: one RGNV of the mesh's own renders there, made once (HiFi-123: x̃₀ from
    RGNV of the model's renders; generated or enhanced views would sit a few pixels off the mesh)."""
    import torch

    from img2mesh.hifi123.distillation import latent_of
    from img2mesh.hifi123.rgnv import enhance_latents
    from img2mesh.hifi123.runtime import alphas

    ctx.log.info("refine: enhancing the renders at the fixed cameras %s once (RGNV)", list(ctx.config.refine.fixed_views))
    with torch.no_grad():
        latents = torch.cat([latent_of(model, scene.image(texture, raster), grad=False) for raster in scene.fixed])
        depths = torch.cat([scene.depth(model, raster) for raster in scene.fixed])
        out, _ = enhance_latents(model.unet, alphas(model), scene.branch, latents.to(model.dtype), depths,
                                 scene.prompts.text, scene.prompts.uncond, settings, model.v_prediction)
    return out.float()


PHOTO_EROSION_PX = 2  # the photo's loss leaves out this band (pixels of a 256² image) inside the silhouettes


def photo_camera_of(ctx: StageContext, mesh_dir: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """K (for ``size``²) and pose of the photo: the mesh stage's registration (``photo_camera.json``) when
    it made one, else SyncDreamer's input camera at the estimated elevation."""
    from img2mesh.mesh.photo import PhotoCamera
    from img2mesh.utils import cameras

    camera = PhotoCamera.load(mesh_dir)
    if camera is not None:
        return camera.at_size(size)
    elevation = float(json.loads((ctx.stage_dir("elevation") / "elevation.json").read_text())["elevation_deg"])
    return cameras.intrinsics(size), cameras.look_at_pose(0.0, math.radians(elevation))


def build_scene(ctx: StageContext, mesh: "TexturedMesh", model: Optional["DepthDiffusion"], size: int, factor: int,
                texture: "torch.Tensor", mesh_dir: Path) -> "Scene":
    """The cameras rasterised once (at ``factor`` times ``size``), the photo and its region, the reference
    branch (once per mesh) and the fixed cameras' targets."""
    import torch
    import torch.nn.functional as F

    from img2mesh.hifi123.rgnv import RGNVSettings
    from img2mesh.hifi123.runtime import encode_reference, prompts, reference_branch
    from img2mesh.refine.render import camera_pool, rasterise
    from img2mesh.refine.rgsd import Scene, photo_region
    from img2mesh.segment.recentre import framed_photo
    from img2mesh.utils import cameras

    device = torch.device(ctx.device)
    cfg = ctx.config.refine
    fine = size * factor
    K = cameras.intrinsics(fine)
    photo, photo_mask = framed_photo(ctx.stage_dir("segment"), ctx.config.segment.crop_size, size)
    photo_camera = rasterise(mesh, *photo_camera_of(ctx, mesh_dir, fine), fine, device)
    coverage = F.avg_pool2d(photo_camera.mask.float()[None, None], factor)[0, 0].cpu().numpy() >= 0.5
    region = photo_region(coverage, photo_mask, max(1, round(PHOTO_EROSION_PX * size / 256)))
    targets = cameras.target_poses()
    fixed = [rasterise(mesh, K, targets[v], fine, device) for v in cfg.fixed_views]
    with ctx.progress(f"rasterising {cfg.cameras} cameras at {fine}²", total=cfg.cameras) as task:
        pool = []
        for camera_K, pose in camera_pool(cfg.cameras, fine, ctx.config.run.seed):
            pool.append(rasterise(mesh, camera_K, pose, fine, device))
            task.advance()
    photo_tensor = torch.from_numpy(photo).float().div(255).permute(2, 0, 1)[None].to(device)
    scene = Scene(pool, fixed, None, photo_camera, photo_tensor, None, None, photo_region=torch.from_numpy(region).to(device),
                  supersample=factor, model_size=size, photo_mask=photo_mask, photo_coverage=coverage)
    if model is not None and cfg.distillation:
        settings = RGNVSettings.from_config(cfg, ctx.config.sd2_depth)
        scene.prompts = prompts(model, cfg.prompt, cfg.guidance)
        scene.branch = reference_branch(model, encode_reference(model, photo, photo_mask, ctx.device), scene.prompts,
                                        settings)
        scene.targets = fixed_targets(ctx, model, scene, texture, settings)
    return scene


def before_after(mesh: "TexturedMesh", before: np.ndarray, after: np.ndarray, views: list[int]) -> np.ndarray:
    """Renders at the fixed cameras (256²): the starting texture on top, the refined one below."""
    from img2mesh.mesh.preview import render
    from img2mesh.utils import cameras
    from img2mesh.utils.images import grid

    K, poses = cameras.intrinsics(256), cameras.target_poses()
    rows = [np.stack([render(mesh.trimesh(texture), K, poses[v], 256, shading=False) for v in views])
            for texture in (before, after)]
    return np.concatenate([grid(row, len(views)) for row in rows], 0)


def refine_mesh(ctx: StageContext, mesh_dir: Path, out_dir: Path, model: Optional["DepthDiffusion"]) -> dict[str, Any]:
    """Refine the texture of the mesh in ``mesh_dir``; write the refined mesh into ``out_dir``."""
    import torch

    from img2mesh.hifi123.rgnv import RGNVSettings
    from img2mesh.mesh.export import export_mesh
    from img2mesh.mesh.texture import pad_charts
    from img2mesh.refine.diagnostics import chart_texels, diagnostics
    from img2mesh.refine.render import TexturedMesh
    from img2mesh.refine.rgsd import RGSDSettings, TextureRefiner

    cfg = ctx.config.refine
    started = time.perf_counter()
    mesh = TexturedMesh.from_glb(mesh_dir / "mesh.glb")
    size = render_size(ctx.config)
    factor = supersample(ctx.config, mesh.texture.shape[0], size)
    device = torch.device(ctx.device)
    refiner = TextureRefiner(mesh.texture, RGSDSettings.from_config(cfg, ctx.config.run.seed), device)
    charts = chart_texels(mesh, device)
    refiner.charts = torch.from_numpy(charts).to(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / CHECKPOINT
    if not ctx.resumed:
        checkpoint.unlink(missing_ok=True)
    scene = build_scene(ctx, mesh, model, size, factor, refiner.texture.detach(), mesh_dir)
    rgnv = RGNVSettings.from_config(cfg, ctx.config.sd2_depth) if model is not None and cfg.distillation else None
    before = diagnostics(model, scene, refiner.texture.detach())
    with ctx.progress("RGSD texture refinement", total=cfg.iterations) as task:
        if checkpoint.is_file():
            refiner.load(checkpoint)
            task.advance(refiner.iteration)
            ctx.log.info("refine: resuming at iteration %d", refiner.iteration)
        refiner.run(model, scene, rgnv, checkpoint, on_step=lambda facts: task.advance(loss=facts["loss"]))
    checkpoint.unlink(missing_ok=True)
    # the gutters between charts take the refined colours of their charts again (mip-maps read them)
    texture = pad_charts(refiner.texture_uint8(), charts)
    after = diagnostics(model, scene, torch.from_numpy(texture).float().div(255).permute(2, 0, 1)[None].to(device))
    textured = mesh.trimesh(texture)
    formats = [f for f in ctx.config.mesh.formats if f in EXPORTED]
    written = export_mesh(textured, out_dir, formats, textured)
    atomic_save_image(out_dir / "before_after.png", before_after(mesh, mesh.texture, texture,
                                                                 [int(v) for v in cfg.fixed_views]))
    history = refiner.history
    first = [h["loss"] for h in history[:10]]
    last = [h["loss"] for h in history[-10:]]
    per_step = refiner.touched_per_step
    return {"files": [p.name for p in written], "iterations": cfg.iterations, "render_size": size,
            "supersample": factor, "distillation": cfg.distillation,
            "loss_first10": round(float(np.mean(first)), 6) if first else None,
            "loss_last10": round(float(np.mean(last)), 6) if last else None,
            "texture_size": int(texture.shape[0]),
            "texels_with_gradient_per_step": round(float(np.mean(per_step)), 4) if per_step else None,
            "texels_with_gradient_in_run": round(float((refiner.touched.cpu().numpy() & charts).sum()
                                                       / max(charts.sum(), 1)), 4),
            "before": before, "after": after, "seconds": round(time.perf_counter() - started, 2)}


def run(ctx: StageContext) -> dict[str, Any]:
    from img2mesh.generate.sets import PER_SET, result_folders
    from img2mesh.hifi123.runtime import depth_model

    cfg = ctx.config.refine
    model = depth_model(ctx) if cfg.distillation else None
    ctx.log.info("refine: %d iterations (T = %d, l = %d, guidance %g), %s", cfg.iterations, cfg.steps,
                 cfg.inversion_steps, cfg.guidance, "with distillation" if cfg.distillation else "the photo's loss only")
    folders = result_folders(ctx.stage_dir("mesh"), "mesh.glb")  # as the mesh stage laid them out
    if len(folders) == 1 and folders[0][0] is None:
        info = refine_mesh(ctx, folders[0][1], ctx.out_dir, model)
    else:
        info = {PER_SET: {folder.name: refine_mesh(ctx, folder, ctx.out_dir / folder.name, model)
                          for _, folder in folders}}
    atomic_write_json(ctx.out_dir / "refine.json", info)
    return info


_FILES = ("mesh.glb", "mesh.obj", "mesh.mtl", "mesh_albedo.png")
STAGE = Stage(
    name="refine",
    description="HiFi-123 RGSD of the mesh's texture (refine.enabled; quality preset)",
    reads=("segment", "elevation", "generate", "mesh"),
    outputs=("refine.json", "**/before_after.png"),
    config_keys=CONFIG_KEYS,
    run=run,
    publish=_FILES + tuple(f"sample_*/{name}" for name in _FILES),
    models=(MODEL_NAME,),
    version=2,  # bumped when results change; what each version changed: CHANGELOG.md, "Stage versions"
    check_config=check_config,
    config_values=config_values,
    config=RefineConfig,
    shared_config=(("sd2_depth", SD2DepthConfig),),
    report=panel,
    enabled=lambda config: config.refine.enabled,
)
