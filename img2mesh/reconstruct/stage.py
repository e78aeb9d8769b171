"""The reconstruct stage: views at known cameras -> a trained NeuS field (``field.safetensors``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from img2mesh.pipeline.stage import Stage, StageContext
from img2mesh.utils.files import atomic_write_json

CHECKPOINT = "checkpoint.pt"


def field_config(ctx: StageContext) -> "FieldConfig":
    from img2mesh.reconstruct.fields import FieldConfig

    cfg = ctx.config.reconstruct
    return FieldConfig(kind=cfg.field, hidden=cfg.hidden, layers=cfg.layers, skip_at=cfg.layers // 2,
                       hash_levels=cfg.hash_levels, hash_log2_size=cfg.hash_log2_size)


def reconstruct(ctx: StageContext, views_dir: Path, cameras_file: Optional[Path]) -> dict[str, Any]:
    """Train a field on the views of ``views_dir`` and save it in the stage folder."""
    import torch
    from safetensors.torch import save_file

    from img2mesh.reconstruct.fields import NeuSField
    from img2mesh.reconstruct.renderer import RenderSettings
    from img2mesh.reconstruct.trainer import TrainSettings, train
    from img2mesh.reconstruct.views import load_views

    cfg = ctx.config.reconstruct
    views = load_views(views_dir, cfg.image_size, cameras_file)
    config = field_config(ctx)
    field = NeuSField(config)
    ctx.log.info("reconstruct: %s field (%s), %d steps x %d rays x %d samples", cfg.field, field.backend,
                 cfg.steps, cfg.rays_per_step, cfg.samples_per_ray)
    settings = TrainSettings(
        steps=cfg.steps, rays_per_step=cfg.rays_per_step, learning_rate=cfg.learning_rate,
        warmup_steps=min(cfg.warmup_steps, cfg.steps // 4), mask_weight=cfg.mask_weight,
        eikonal_weight=cfg.eikonal_weight, curvature_weight=cfg.curvature_weight if cfg.field == "hashgrid" else 0.0,
        checkpoint_every=cfg.checkpoint_every, seed=ctx.config.run.seed)
    render = RenderSettings(coarse_samples=cfg.samples_per_ray // 2, fine_samples=cfg.samples_per_ray // 2)
    checkpoint = ctx.out_dir / CHECKPOINT
    if not ctx.resumed:
        checkpoint.unlink(missing_ok=True)
    shown = [0]  # steps the bar has shown; a resumed run's first step jumps it to the checkpoint

    def advance(step: int, loss: float) -> None:
        task.advance(step + 1 - shown[0], loss=loss)
        shown[0] = step + 1

    with ctx.progress("NeuS training", total=cfg.steps) as task:
        stats = train(field, views, settings, render, torch.device(ctx.device), checkpoint, on_step=advance)
    checkpoint.unlink(missing_ok=True)  # a finished field needs no resume point
    save_file({k: v.detach().cpu().contiguous() for k, v in field.state_dict().items()},
              str(ctx.out_dir / "field.safetensors"))
    atomic_write_json(ctx.out_dir / "field.json", {"config": config.to_dict(), "backend": field.backend})
    return {**stats, "field": cfg.field, "backend": field.backend, "mask_source": views.mask_source,
            "views": int(views.images.shape[0]), "view_size": list(views.size)}


def load_field(folder: Path, device: str) -> "NeuSField":
    """Rebuild the trained field the stage saved in ``folder``."""
    from safetensors.torch import load_file

    from img2mesh.reconstruct.fields import FieldConfig, NeuSField

    record = json.loads((folder / "field.json").read_text())
    field = NeuSField(FieldConfig(**record["config"]))
    field.load_state_dict(load_file(folder / "field.safetensors"))
    return field.to(device).eval()


def run_on_generated(ctx: StageContext) -> dict[str, Any]:
    generated = ctx.stage_dir("generate")
    return reconstruct(ctx, generated / "sample_0", generated / "cameras.json")


def run_on_folder(ctx: StageContext) -> dict[str, Any]:
    return reconstruct(ctx, ctx.input_path, None)


def check_views_folder(path: Path, config: "Config") -> None:
    """Refuse a bad views folder before anything is written (``img2mesh reconstruct``)."""
    from img2mesh.reconstruct.views import load_views

    load_views(path, config.reconstruct.image_size)


_COMMON = dict(name="reconstruct", description="fit a NeuS signed-distance field to the views",
               outputs=("field.safetensors", "field.json"), config_keys=("reconstruct", "run.seed"))
STAGE = Stage(reads=("generate",), run=run_on_generated, **_COMMON)
FOLDER_STAGE = Stage(reads=(), run=run_on_folder, check_input=check_views_folder, **_COMMON)
