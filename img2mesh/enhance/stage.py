"""The enhance stage: HiFi-123's reference-guided novel-view enhancement (RGNV) of the generated views.

Off by default (``enhance.enabled``; the ``quality`` preset turns it on). For every sample set that
``reconstruct`` will use (``reconstruct.select``), each of the 16 views is upscaled to SD-2-depth's
512², inverted and denoised together with the recentred input photo as the reference
(``enhance/rgnv.py``), and written with ``cameras.json`` scaled to the new size; ``reconstruct``
then reads these views instead of generate's.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from img2mesh.pipeline.contract import Stage, StageContext
from img2mesh.utils.files import atomic_save_image, atomic_write_json

if TYPE_CHECKING:
    import torch

    from img2mesh.enhance.components import DepthDiffusion
    from img2mesh.pipeline.config import Config

MODEL_NAME = "sd2_depth"
CONFIG_KEYS = ("enhance", "reconstruct.select")


def config_values(config: "Config") -> dict[str, Any]:
    """Switched off, the stage's other settings change nothing (and re-run nothing)."""
    if not config.enhance.enabled:
        return {"enhance.enabled": False}
    return {key: config.get(key) for key in CONFIG_KEYS}


def check_config(config: "Config") -> None:
    from img2mesh.errors import UsageError

    cfg = config.enhance
    if cfg.enabled and cfg.inversion_steps > cfg.steps:
        raise UsageError(f"config key enhance.inversion_steps: {cfg.inversion_steps} is more than enhance.steps "
                         f"({cfg.steps})")


def depth_model(ctx: StageContext) -> "DepthDiffusion":
    """SD-2-depth (or the tiny random stand-in) in the run's precision, loaded once per run."""
    import torch

    from img2mesh.enhance.components import load_sd2_depth, tiny_sd2_depth

    cfg = ctx.config.enhance
    half = ctx.device.startswith("cuda") and cfg.precision in ("auto", "fp16")
    dtype = torch.float16 if half else torch.float32
    key = (cfg.model, cfg.random_weights, cfg.hub_repo, str(dtype))

    def load() -> "DepthDiffusion":
        if cfg.model == "tiny" or cfg.random_weights:
            if cfg.model != "tiny":
                from img2mesh.errors import UsageError

                raise UsageError("enhance.random_weights needs enhance.model: tiny (the full model has no "
                                 "random stand-in)")
            model = tiny_sd2_depth()
            for net in (model.unet, model.vae, model.text_encoder):
                net.to(dtype)
            model.dtype = dtype
            return model.to(ctx.device)
        from pathlib import Path

        from img2mesh.utils.weights import sd2_depth_weight

        local = Path(cfg.hub_repo).expanduser()
        folder = local if local.is_dir() else sd2_depth_weight(cfg.hub_repo).download()
        ctx.log.info("enhance: loading SD-2-depth from %s (%s)", folder, str(dtype).removeprefix("torch."))
        return load_sd2_depth(folder, dtype).to(ctx.device)

    return ctx.models.get(MODEL_NAME, key, load, ctx.device)


def to_model_size(image: np.ndarray, size: int) -> np.ndarray:
    """An H,W,3 uint8 image resized (bicubic) to size x size."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] (images, depth conditions) -> uint8, rounded."""
    return ((values + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def as_tensor(images: np.ndarray, device: str) -> "torch.Tensor":
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    import torch

    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)


def enhance_in_chunks(ctx: StageContext, model: "DepthDiffusion", reference: dict, views: dict, task: Any) -> Any:
    """RGNV over the views ``batch_views`` at a time, halving the chunk on CUDA out-of-memory."""
    import torch

    from img2mesh.enhance.rgnv import RGNVSettings, enhance_latents
    from img2mesh.utils.device import halving_on_out_of_memory

    cfg = ctx.config.enhance
    settings = RGNVSettings(cfg.steps, cfg.inversion_steps, cfg.start_step, cfg.start_layer, cfg.guidance)
    text = model.embed_text(cfg.prompt)
    uncond = model.embed_text("") if cfg.prompt else None  # the empty prompt: both branches agree
    chunk, out, start = cfg.batch_views, [], 0
    count = views["latents"].shape[0]

    def enhance(size: int) -> torch.Tensor:
        part = slice(start, min(start + size, count))
        latents, _ = enhance_latents(model.unet, model.alphas_cumprod.to(model.unet.device), reference["latents"],
                                     views["latents"][part], reference["depth"], views["depth"][part], text,
                                     uncond, settings, model.v_prediction)
        return latents

    while start < count:
        latents, chunk = halving_on_out_of_memory(enhance, chunk, 1, lambda size: ctx.log.warning(
            "enhance: CUDA out of memory; retrying with enhance.batch_views = %d", size))
        out.append(model.decode(latents))
        task.advance(latents.shape[0])
        start += latents.shape[0]
    return torch.cat(out)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.enhance
    if not cfg.enabled:
        atomic_write_json(ctx.out_dir / "enhance.json", {"enabled": False})
        return {"enabled": False}
    from PIL import Image

    from img2mesh.utils.images import composite_on_white, grid, white_background_mask
    from img2mesh.utils.selection import selected_samples

    started = time.perf_counter()
    generated = ctx.stage_dir("generate")
    sets = selected_samples(ctx.config.reconstruct.select, json.loads((generated / "scores.json").read_text()))
    model = depth_model(ctx)
    size = cfg.image_size
    latent = size // model.vae_factor
    rgba = Image.open(ctx.stage_dir("segment") / "input_rgba.png").convert("RGBA")
    ref_image = to_model_size((composite_on_white(rgba) * 255).round().astype(np.uint8), size)
    ref_mask = to_model_size(np.repeat(np.asarray(rgba)[..., 3:], 3, -1), size)[..., 0] > 127
    reference = {"latents": model.encode(as_tensor(ref_image[None], ctx.device)),
                 "depth": model.depth(ref_image[None], ref_mask[None], latent)}
    ctx.log.info("enhance: RGNV on sample set(s) %s at %d², %d DDIM steps, l = %d, injection from step %d, layer %d",
                 sets, size, cfg.steps, cfg.inversion_steps, cfg.start_step, cfg.start_layer)
    for k in sets:
        folder = generated / f"sample_{k}"
        before = np.stack([to_model_size(np.asarray(Image.open(folder / f"{n:02d}.png").convert("RGB")), size)
                           for n in range(16)])
        masks = np.stack([white_background_mask(v.astype(np.float32) / 255) for v in before])
        views = {"latents": model.encode(as_tensor(before, ctx.device)), "depth": model.depth(before, masks, latent)}
        with ctx.progress(f"enhance sample {k}", total=len(before)) as task:
            after = enhance_in_chunks(ctx, model, reference, views, task)
        after_u8 = to_uint8(after.cpu().permute(0, 2, 3, 1).numpy())
        out = ctx.out_dir / f"sample_{k}"
        for n, view in enumerate(after_u8):
            atomic_save_image(out / f"{n:02d}.png", view)
            atomic_save_image(out / "depth" / f"{n:02d}.png", to_uint8(views["depth"][n, 0].float().cpu().numpy()))
        thumb = lambda images: np.stack([to_model_size(v, 128) for v in images])  # noqa: E731
        atomic_save_image(out / "strip.png", np.concatenate([grid(thumb(before), 16), grid(thumb(after_u8), 16)], 0))
    atomic_save_image(ctx.out_dir / "reference_depth.png", to_uint8(reference["depth"][0, 0].float().cpu().numpy()))
    record = json.loads((generated / "cameras.json").read_text())
    scale = size / float(record.get("image_size", 256))
    record["K"] = (np.asarray(record["K"], dtype=np.float64) * np.array([[scale], [scale], [1.0]])).tolist()
    record["image_size"] = size
    atomic_write_json(ctx.out_dir / "cameras.json", record)
    atomic_write_json(ctx.out_dir / "enhance.json", {"enabled": True, "sets": sets})
    return {"enabled": True, "sets": sets, "model": cfg.model, "weights": "random" if cfg.random_weights else cfg.hub_repo,
            "precision": str(model.dtype).removeprefix("torch."), "image_size": size, "steps": cfg.steps,
            "inversion_steps": cfg.inversion_steps, "start_step": cfg.start_step, "start_layer": cfg.start_layer,
            "guidance": cfg.guidance, "prompt": cfg.prompt, "seconds": round(time.perf_counter() - started, 2)}


STAGE = Stage(
    name="enhance",
    description="HiFi-123 reference-guided enhancement of the generated views (enhance.enabled; quality preset)",
    reads=("segment", "generate"),
    outputs=("enhance.json",),
    config_keys=CONFIG_KEYS,
    run=run,
    models=(MODEL_NAME,),
    check_config=check_config,
    config_values=config_values,
)
