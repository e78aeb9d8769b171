"""The segment stage: photo -> cut-out (``rgba.png``) -> 256x256 input on white (``input.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from img2mesh.errors import StageError
from img2mesh.pipeline.contract import Stage, StageContext
from img2mesh.segment.config import SegmentConfig
from img2mesh.segment.panel import panel
from img2mesh.segment.read import has_meaningful_alpha, load_image
from img2mesh.segment.recentre import alpha_bbox, recentre
from img2mesh.segment.weights import stage_weights
from img2mesh.utils.files import atomic_save_image

if TYPE_CHECKING:
    from PIL import Image

    from img2mesh.pipeline.config import Config

FOREGROUND_ALPHA = 128  # alpha at or above this counts as object for coverage and border checks
MIN_OBJECT_SIDE = 4  # pixels: a smaller cut-out is a speck, and the official crop would make it empty


def check_input(path: Path, config: "Config") -> None:
    """Refuse a bad photo before anything is written (called by the runner for every input)."""
    load_image(path, config.segment.max_pixels)


def cut_out(ctx: StageContext, photo: "Image.Image") -> tuple["Image.Image", str]:
    """The RGBA cut-out and where its alpha came from (``alpha`` or ``carvekit``)."""
    mode = ctx.config.segment.use_alpha
    if mode == "always" or (mode == "auto" and has_meaningful_alpha(photo)):
        return photo.convert("RGBA"), "alpha"
    from img2mesh.segment.matting import RemoverSettings, get_remover

    cfg = ctx.config.segment
    settings = RemoverSettings(ctx.device, cfg.random_weights, cfg.seg_size, cfg.matting_size)
    ctx.log.info("segment: removing the background with carvekit (%s weights, %s)",
                 "random" if cfg.random_weights else "pretrained", ctx.device)
    with ctx.progress("background removal", total=1) as task:
        (result,) = get_remover(settings, ctx.models)([photo.convert("RGB")])
        task.advance()
    return result, "carvekit"


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.segment
    photo = load_image(ctx.input_path, cfg.max_pixels)
    cutout, source = cut_out(ctx, photo)
    alpha = np.asarray(cutout.getchannel("A"))
    foreground = alpha >= FOREGROUND_ALPHA
    if not foreground.any():
        raise StageError(f"no object found in {ctx.input_path.name}; pass an RGBA image or --no-segment")
    touches_border = bool(foreground[0].any() or foreground[-1].any()
                          or foreground[:, 0].any() or foreground[:, -1].any())
    if touches_border:
        ctx.log.warning("segment: the object touches the border of %s; it is probably cropped",
                        ctx.input_path.name)
    left, top, right, bottom = alpha_bbox(alpha)
    if min(right - left, bottom - top) < MIN_OBJECT_SIDE:  # the official crop drops the last row and column
        raise StageError(f"the object found in {ctx.input_path.name} is {right - left + 1}x{bottom - top + 1} pixels: "
                         f"too small to reconstruct (at least {MIN_OBJECT_SIDE + 1} pixels a side)")
    result = recentre(cutout, cfg.crop_size)
    atomic_save_image(ctx.out_dir / "rgba.png", cutout)
    atomic_save_image(ctx.out_dir / "input_rgba.png", result.rgba)
    on_white = np.clip(np.rint(result.on_white() * 255.0), 0, 255).astype(np.uint8)
    atomic_save_image(ctx.out_dir / "input.png", on_white)
    return {
        "alpha_source": source,
        "input_size": list(photo.size),
        "bbox_xyxy": list(result.bbox),
        "scale": result.scale,
        "object_size": list(result.size),
        "object_offset": list(result.offset),
        "mask_coverage": round(float(foreground.mean()), 6),
        "touches_border": touches_border,
    }


STAGE = Stage(
    name="segment",
    description="remove the background and recentre the object on a 256x256 white image",
    reads=(),
    outputs=("rgba.png", "input_rgba.png", "input.png"),
    config_keys=("segment",),
    run=run,
    check_input=check_input,
    models=("carvekit",),
    config=SegmentConfig,
    weights=stage_weights,
    report=panel,
)
