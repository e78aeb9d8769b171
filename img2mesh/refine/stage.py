"""The refine stage: HiFi-123's RGSD on the mesh stage's texture; the geometry stays as it is.

Off by default (``refine.enabled``; the ``quality`` preset turns it on). For every mesh the mesh stage
made, its UV texture is optimised (``refine/rgsd.py``) so that renders look like reference-guided
enhancements of themselves, with the photo's own loss at the input camera; the refined ``mesh.glb``
(and OBJ) replace the mesh stage's at the top of OUT, and ``before_after.png`` shows the fixed cameras
before (top) and after.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from img2mesh.enhance.runtime import MODEL_NAME
from img2mesh.pipeline.contract import Stage, StageContext
from img2mesh.refine.config import RefineConfig
from img2mesh.refine.report import panel
from img2mesh.utils.files import atomic_save_image, atomic_write_json

if TYPE_CHECKING:
    import torch

    from img2mesh.enhance.components import DepthDiffusion
    from img2mesh.enhance.rgnv import RGNVSettings
    from img2mesh.pipeline.config import Config
    from img2mesh.refine.render import TexturedMesh
    from img2mesh.refine.rgsd import Scene

CONFIG_KEYS = ("refine", "enhance", "segment.crop_size", "reconstruct.select", "mesh.formats", "run.seed")
CHECKPOINT = "checkpoint.pt"
EXPORTED = ("glb", "obj")  # the formats that carry a UV texture


def config_values(config: "Config") -> dict[str, Any]:
    """Switched off, the stage's other settings change nothing."""
    if not config.refine.enabled:
        return {"refine.enabled": False}
    return {key: config.get(key) for key in CONFIG_KEYS}


def check_config(config: "Config") -> None:
    from img2mesh.errors import UsageError

    cfg = config.refine
    if not cfg.enabled:
        return
    if cfg.inversion_steps > cfg.steps:
        raise UsageError(f"config key refine.inversion_steps: {cfg.inversion_steps} is more than refine.steps "
                         f"({cfg.steps})")
    if not config.mesh.texture or not set(EXPORTED) & set(config.mesh.formats):
        raise UsageError("refine optimises the UV texture: it needs mesh.texture on and glb or obj in mesh.formats")


def render_size(config: "Config") -> int:
    """``refine.render_size`` resolved: the model's own size for "auto"."""
    from img2mesh.enhance.config import FULL_IMAGE_SIZE, TINY_IMAGE_SIZE

    size = config.refine.render_size
    if size != "auto":
        return size
    return TINY_IMAGE_SIZE if config.enhance.model == "tiny" else FULL_IMAGE_SIZE


def rgnv_settings(config: "Config") -> "RGNVSettings":
    """RGSD's sampling: refine's schedule and guidance, enhance's injection start."""
    from img2mesh.enhance.rgnv import RGNVSettings

    cfg = config.refine
    return RGNVSettings(cfg.steps, cfg.inversion_steps, min(config.enhance.start_step, cfg.inversion_steps - 1),
                       config.enhance.start_layer, cfg.guidance)


def fixed_targets(ctx: StageContext, model: "DepthDiffusion", scene: "Scene", texture: "torch.Tensor", sample: int,
                  settings: "RGNVSettings") -> "torch.Tensor":
    """x̃₀ of the fixed cameras: the enhance stage's views there (when it ran), else one RGNV of the
    current renders, made once."""
    import torch

    from img2mesh.enhance.rgnv import enhance_latents
    from img2mesh.enhance.runtime import alphas, as_tensor, to_model_size
    from img2mesh.refine.render import render
    from img2mesh.refine.rgsd import depth_condition, latent_of

    size = scene.photo.shape[-1]
    views = [int(v) for v in ctx.config.refine.fixed_views]
    if ctx.config.enhance.enabled:
        from PIL import Image

        folder = ctx.stage_dir("enhance") / f"sample_{sample}"
        images = np.stack([to_model_size(np.asarray(Image.open(folder / f"{n:02d}.png").convert("RGB")), size)
                           for n in views])
        ctx.log.info("refine: the fixed cameras' targets are enhance's views %s", views)
        return model.encode(as_tensor(images, ctx.device)).float()
    ctx.log.info("refine: enhancing the renders at the fixed cameras %s once (RGNV)", views)
    with torch.no_grad():
        latents = torch.cat([latent_of(model, render(texture, raster), grad=False) for raster in scene.fixed])
        depths = torch.cat([depth_condition(model, raster) for raster in scene.fixed])
        out, _ = enhance_latents(model.unet, alphas(model), scene.branch, latents.to(model.dtype), depths,
                                 scene.prompts.text, scene.prompts.uncond, settings, model.v_prediction)
    return out.float()


def build_scene(ctx: StageContext, mesh: "TexturedMesh", model: Optional["DepthDiffusion"], size: int, sample: int,
                texture: "torch.Tensor") -> "Scene":
    """The cameras rasterised once, the photo, the reference branch (once per mesh) and the targets."""
    import torch

    from img2mesh.enhance.runtime import encode_reference, prompts, reference_branch, reference_photo
    from img2mesh.refine.render import camera_pool, rasterise
    from img2mesh.refine.rgsd import Scene
    from img2mesh.utils import cameras

    device = torch.device(ctx.device)
    cfg = ctx.config.refine
    elevation = float(json.loads((ctx.stage_dir("elevation") / "elevation.json").read_text())["elevation_deg"])
    K = cameras.intrinsics(size)
    photo, photo_mask = reference_photo(ctx.stage_dir("segment"), ctx.config.segment.crop_size, size)
    photo_camera = rasterise(mesh, K, cameras.look_at_pose(0.0, math.radians(elevation)), size, device)
    targets = cameras.target_poses()
    fixed = [rasterise(mesh, K, targets[v], size, device) for v in cfg.fixed_views]
    with ctx.progress(f"rasterising {cfg.cameras} cameras at {size}²", total=cfg.cameras) as task:
        pool = []
        for camera_K, pose in camera_pool(cfg.cameras, size, ctx.config.run.seed):
            pool.append(rasterise(mesh, camera_K, pose, size, device))
            task.advance()
    photo_tensor = torch.from_numpy(photo).float().div(255).permute(2, 0, 1)[None].to(device)
    scene = Scene(pool, fixed, None, photo_camera, photo_tensor, None, None)
    if model is not None and cfg.distillation:
        settings = rgnv_settings(ctx.config)
        scene.prompts = prompts(model, cfg.prompt, cfg.guidance)
        scene.branch = reference_branch(model, encode_reference(model, photo, photo_mask, ctx.device), scene.prompts,
                                        settings)
        scene.targets = fixed_targets(ctx, model, scene, texture, sample, settings)
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


def refine_mesh(ctx: StageContext, mesh_dir: Path, out_dir: Path, model: Optional["DepthDiffusion"],
                sample: int) -> dict[str, Any]:
    """Refine the texture of the mesh in ``mesh_dir``; write the refined mesh into ``out_dir``."""
    import torch

    from img2mesh.mesh.export import export_mesh
    from img2mesh.refine.render import TexturedMesh
    from img2mesh.refine.rgsd import RGSDSettings, TextureRefiner

    cfg = ctx.config.refine
    started = time.perf_counter()
    mesh = TexturedMesh.from_glb(mesh_dir / "mesh.glb")
    size = render_size(ctx.config)
    settings = RGSDSettings(cfg.iterations, cfg.learning_rate, cfg.reference_weight, cfg.distillation,
                            cfg.checkpoint_every, ctx.config.run.seed)
    refiner = TextureRefiner(mesh.texture, settings, torch.device(ctx.device))
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / CHECKPOINT
    if not ctx.resumed:
        checkpoint.unlink(missing_ok=True)
    scene = build_scene(ctx, mesh, model, size, sample, refiner.texture.detach())
    rgnv = rgnv_settings(ctx.config) if model is not None and cfg.distillation else None
    with ctx.progress("RGSD texture refinement", total=cfg.iterations) as task:
        if checkpoint.is_file():
            refiner.load(checkpoint)
            task.advance(refiner.iteration)
            ctx.log.info("refine: resuming at iteration %d", refiner.iteration)
        refiner.run(model, scene, rgnv, checkpoint, on_step=lambda facts: task.advance(loss=facts["loss"]))
    checkpoint.unlink(missing_ok=True)
    texture = refiner.texture_uint8()
    textured = mesh.trimesh(texture)
    formats = [f for f in ctx.config.mesh.formats if f in EXPORTED]
    written = export_mesh(textured, out_dir, formats, textured)
    atomic_save_image(out_dir / "before_after.png", before_after(mesh, mesh.texture, texture,
                                                                 [int(v) for v in cfg.fixed_views]))
    history = refiner.history
    first = [h["loss"] for h in history[:10]]
    last = [h["loss"] for h in history[-10:]]
    return {"files": [p.name for p in written], "iterations": cfg.iterations, "render_size": size,
            "distillation": cfg.distillation, "loss_first10": round(float(np.mean(first)), 6) if first else None,
            "loss_last10": round(float(np.mean(last)), 6) if last else None,
            "texture_size": int(texture.shape[0]), "seconds": round(time.perf_counter() - started, 2)}


def run(ctx: StageContext) -> dict[str, Any]:
    from img2mesh.enhance.runtime import depth_model
    from img2mesh.utils.selection import selected_samples

    cfg = ctx.config.refine
    model = depth_model(ctx) if cfg.distillation else None
    meshes = ctx.stage_dir("mesh")
    chosen = selected_samples(ctx.config.reconstruct.select,
                              json.loads((ctx.stage_dir("generate") / "scores.json").read_text()))
    ctx.log.info("refine: %d iterations (T = %d, l = %d, guidance %g), %s", cfg.iterations, cfg.steps,
                 cfg.inversion_steps, cfg.guidance, "with distillation" if cfg.distillation else "the photo's loss only")
    if (meshes / "mesh.glb").is_file():
        info = refine_mesh(ctx, meshes, ctx.out_dir, model, chosen[0])
    else:
        info = {"per_sample": {}}
        for k in chosen:
            folder = meshes / f"sample_{k}"
            info["per_sample"][folder.name] = refine_mesh(ctx, folder, ctx.out_dir / folder.name, model, k)
    atomic_write_json(ctx.out_dir / "refine.json", info)
    return info


_FILES = ("mesh.glb", "mesh.obj", "mesh.mtl", "mesh_albedo.png")
STAGE = Stage(
    name="refine",
    description="HiFi-123 RGSD of the mesh's texture (refine.enabled; quality preset)",
    reads=("segment", "elevation", "generate", "enhance", "mesh"),
    outputs=("refine.json", "**/before_after.png"),
    config_keys=CONFIG_KEYS,
    run=run,
    publish=_FILES + tuple(f"sample_*/{name}" for name in _FILES),
    models=(MODEL_NAME,),
    check_config=check_config,
    config_values=config_values,
    config=RefineConfig,
    report=panel,
    enabled=lambda config: config.refine.enabled,
)
