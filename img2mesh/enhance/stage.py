"""The enhance stage: HiFi-123's reference-guided novel-view enhancement (RGNV) of the generated views.

Off by default (``enhance.enabled``; the ``quality`` preset turns it on). The reference is the
full-resolution photo framed as the 256² input at SD-2-depth's 512², inverted and denoised once
(its self-attention K/V recorded). For every sample set that ``reconstruct`` will use
(``reconstruct.select``), each of the 16 views is upscaled to 512², inverted and denoised with the
reference's K/V injected at every step (``hifi123/rgnv.py``), put on white inside its coarse view's
mask, and written with ``cameras.json`` scaled to the new size; ``reconstruct`` then reads these
views instead of generate's.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from img2mesh.enhance.config import EnhanceConfig
from img2mesh.enhance.panel import panel
from img2mesh.hifi123.config import SD2DepthConfig
from img2mesh.hifi123.runtime import MODEL_NAME
from img2mesh.hifi123.weights import stage_weights
from img2mesh.pipeline.contract import Stage, StageContext
from img2mesh.utils.files import atomic_save_image, atomic_write_json

if TYPE_CHECKING:
    from img2mesh.hifi123.components import DepthDiffusion
    from img2mesh.hifi123.rgnv import ReferenceBranch
    from img2mesh.hifi123.runtime import Prompts
    from img2mesh.pipeline.config import Config

CONFIG_KEYS = ("enhance", "sd2_depth", "reconstruct.select", "segment.crop_size", "reconstruct.masks",
               "segment.random_weights", "segment.seg_size", "segment.matting_size")


def config_values(config: "Config") -> dict[str, Any]:
    """Switched off, the stage's other settings change nothing (and re-run nothing)."""
    if not config.enhance.enabled:
        return {"enhance.enabled": False}
    return {key: config.get(key) for key in CONFIG_KEYS}


def check_config(config: "Config") -> None:
    from img2mesh.hifi123.rgnv import check_schedule

    if config.enhance.enabled:
        check_schedule(config.enhance, "enhance.")


def enhance_in_chunks(ctx: StageContext, model: "DepthDiffusion", branch: "ReferenceBranch", conditions: "Prompts",
                      views: dict, task: Any) -> Any:
    """RGNV over the novel views ``batch_views`` at a time (the reference was denoised once, before),
    halving the chunk on CUDA out-of-memory."""
    import torch

    from img2mesh.hifi123.rgnv import RGNVSettings, enhance_latents
    from img2mesh.hifi123.runtime import alphas
    from img2mesh.utils.device import halving_on_out_of_memory

    settings = RGNVSettings.from_config(ctx.config.enhance, ctx.config.sd2_depth)
    chunk, out, start = ctx.config.enhance.batch_views, [], 0
    count = views["latents"].shape[0]

    def enhance(size: int) -> torch.Tensor:
        part = slice(start, min(start + size, count))
        latents, _ = enhance_latents(model.unet, alphas(model), branch, views["latents"][part], views["depth"][part],
                                     conditions.text, conditions.uncond, settings, model.v_prediction)
        return latents

    while start < count:
        latents, chunk = halving_on_out_of_memory(enhance, chunk, 1, lambda size: ctx.log.warning(
            "enhance: CUDA out of memory; retrying with enhance.batch_views = %d", size))
        out.append(model.decode(latents))
        task.advance(latents.shape[0])
        start += latents.shape[0]
    return torch.cat(out)


def run(ctx: StageContext) -> dict[str, Any]:
    from PIL import Image

    from img2mesh.enhance.config import image_size
    from img2mesh.generate.sets import chosen_sets, set_name
    from img2mesh.hifi123.rgnv import RGNVSettings
    from img2mesh.hifi123.runtime import (
        as_tensor,
        depth_model,
        encode_reference,
        prompts,
        reference_branch,
        to_model_size,
        to_uint8,
    )
    from img2mesh.reconstruct.masks import RemoverMasks
    from img2mesh.segment.recentre import framed_photo
    from img2mesh.utils.images import grid

    cfg = ctx.config.enhance
    started = time.perf_counter()
    generated = ctx.stage_dir("generate")
    sets = chosen_sets(ctx.config.reconstruct.select, generated)
    model = depth_model(ctx)
    size = image_size(cfg, ctx.config.sd2_depth)
    latent = size // model.vae_factor
    photo, photo_mask = framed_photo(ctx.stage_dir("segment"), ctx.config.segment.crop_size, size)
    reference = encode_reference(model, photo, photo_mask, ctx.device)
    conditions = prompts(model, cfg.prompt, cfg.guidance)
    ctx.log.info("enhance: RGNV on sample set(s) %s at %d², %d DDIM steps, l = %d, injection from step %d, layer %d, "
                 "prompt %r at guidance %g", sets, size, cfg.steps, cfg.inversion_steps, cfg.start_step,
                 ctx.config.sd2_depth.start_layer, cfg.prompt, cfg.guidance)
    settings = RGNVSettings.from_config(cfg, ctx.config.sd2_depth)
    branch = reference_branch(model, reference, conditions, settings)  # once, for every view
    mask_maker = RemoverMasks(ctx)
    mask_sources = set()
    for k in sets:
        folder = generated / set_name(k)
        generated_views = [np.asarray(Image.open(folder / f"{n:02d}.png").convert("RGB")) for n in range(16)]
        before = np.stack([to_model_size(view, size) for view in generated_views])
        masks, source = views_masks(mask_maker, generated_views, size)
        mask_sources.add(source)
        views = {"latents": model.encode(as_tensor(before, ctx.device)), "depth": model.depth(before, masks, latent)}
        with ctx.progress(f"enhance sample {k}", total=len(before)) as task:
            after = enhance_in_chunks(ctx, model, branch, conditions, views, task)
        decoded = to_uint8(after.cpu().permute(0, 2, 3, 1).numpy())
        # The generated background goes: each view on white inside its coarse view's mask (as the paper).
        after_u8 = np.where(masks[..., None], decoded, np.uint8(255))
        out = ctx.out_dir / set_name(k)
        for n, view in enumerate(after_u8):
            atomic_save_image(out / f"{n:02d}.png", view)
            atomic_save_image(out / "depth" / f"{n:02d}.png", to_uint8(views["depth"][n, 0].float().cpu().numpy()))
        thumb = lambda images: np.stack([to_model_size(v, 128) for v in images])  # noqa: E731
        atomic_save_image(out / "strip.png", np.concatenate([grid(thumb(before), 16), grid(thumb(after_u8), 16)], 0))
    atomic_save_image(ctx.out_dir / "reference.png", photo)
    atomic_save_image(ctx.out_dir / "reference_depth.png", to_uint8(reference.depth[0, 0].float().cpu().numpy()))
    record = json.loads((generated / "cameras.json").read_text())
    scale = size / float(record.get("image_size", 256))
    record["K"] = (np.asarray(record["K"], dtype=np.float64) * np.array([[scale], [scale], [1.0]])).tolist()
    record["image_size"] = size
    atomic_write_json(ctx.out_dir / "cameras.json", record)
    atomic_write_json(ctx.out_dir / "enhance.json", {"enabled": True, "sets": sets})
    shared = ctx.config.sd2_depth
    return {"enabled": True, "sets": sets, "model": shared.model,
            "weights": "random" if shared.random_weights else shared.hub_repo,
            "precision": str(model.dtype).removeprefix("torch."), "image_size": size, "steps": cfg.steps,
            "inversion_steps": cfg.inversion_steps, "start_step": cfg.start_step, "start_layer": shared.start_layer,
            "guidance": cfg.guidance, "prompt": cfg.prompt, "mask_source": ", ".join(sorted(mask_sources)),
            "seconds": round(time.perf_counter() - started, 2)}


def views_masks(mask_maker: Any, views: list, size: int) -> tuple[np.ndarray, str]:
    """The generated views' masks as ``reconstruct`` makes them (the background remover when its weights
    are here, else the white threshold), at their own size, then brought to ``size``² (bool); and where
    they came from. The white threshold alone would erase near-white parts along the silhouette, which
    reconstruct's remover path could not bring back."""
    import torch
    import torch.nn.functional as F

    soft, source = mask_maker(np.stack(views).astype(np.float32) / 255.0)
    resized = F.interpolate(torch.from_numpy(np.asarray(soft, dtype=np.float32))[:, None], size=(size, size),
                            mode="bilinear", align_corners=False)[:, 0]
    return (resized >= 0.5).numpy(), source


STAGE = Stage(
    name="enhance",
    description="HiFi-123 reference-guided enhancement of the generated views (enhance.enabled; quality preset)",
    reads=("segment", "generate"),
    outputs=("enhance.json",),
    config_keys=CONFIG_KEYS,
    run=run,
    models=(MODEL_NAME, "carvekit"),  # carvekit: the views' masks, as reconstruct makes them
    version=4,  # bumped when results change; what each version changed: CHANGELOG.md, "Stage versions"
    check_config=check_config,
    config_values=config_values,
    config=EnhanceConfig,
    shared_config=(("sd2_depth", SD2DepthConfig),),
    weights=stage_weights,
    report=panel,
    enabled=lambda config: config.enhance.enabled,
)
