"""SD-2-depth for a running stage (enhance, refine): the model from the run's model cache in the run's
precision, the reference photo as the model sees it, and the prompts' embeddings.

Both stages use the model the ``sd2_depth.*`` keys name, so a run loads it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    import torch

    from img2mesh.hifi123.components import DepthDiffusion
    from img2mesh.hifi123.rgnv import ReferenceBranch, RGNVSettings
    from img2mesh.pipeline.contract import StageContext

MODEL_NAME = "sd2_depth"  # what the stages that use it name in Stage.models


def depth_model(ctx: "StageContext") -> "DepthDiffusion":
    """SD-2-depth (or the tiny random stand-in) in the run's precision, loaded once per run."""
    import torch

    from img2mesh.hifi123.components import load_sd2_depth, tiny_sd2_depth

    cfg = ctx.config.sd2_depth
    half = ctx.device.startswith("cuda") and cfg.precision in ("auto", "fp16")
    dtype = torch.float16 if half else torch.float32
    key = (cfg.model, cfg.random_weights, cfg.hub_repo, str(dtype))

    def load() -> "DepthDiffusion":
        if cfg.model == "tiny" or cfg.random_weights:
            if cfg.model != "tiny":
                from img2mesh.errors import UsageError

                raise UsageError("sd2_depth.random_weights needs sd2_depth.model: tiny (the full model has no "
                                 "random stand-in)")
            model = tiny_sd2_depth()
            for net in (model.unet, model.vae, model.text_encoder):
                net.to(dtype)
            model.dtype = dtype
            return model.to(ctx.device)
        from img2mesh.hifi123.weights import sd2_depth_weight

        local = Path(cfg.hub_repo).expanduser()
        folder = local if local.is_dir() else sd2_depth_weight(cfg.hub_repo).download()
        ctx.log.info("%s: loading SD-2-depth from %s (%s)", ctx.stage, folder, str(dtype).removeprefix("torch."))
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


@dataclass
class Reference:
    """The photo as the model sees it: on white at the model's size, its mask, latent and depth."""

    image: np.ndarray  # H,W,3 uint8 on white
    mask: np.ndarray  # H,W bool
    latents: "torch.Tensor"  # (1, 4, h, w)
    depth: "torch.Tensor"  # (1, 1, h, w)


def encode_reference(model: "DepthDiffusion", image: np.ndarray, mask: np.ndarray, device: str) -> Reference:
    """The reference's latent and depth condition."""
    latent = image.shape[0] // model.vae_factor
    return Reference(image, mask, model.encode(as_tensor(image[None], device)), model.depth(image[None], mask[None], latent))


@dataclass
class Prompts:
    """The embeddings RGNV needs: the reference's (the empty prompt, unguided, as the official code
    does), the novel views' prompt, and the empty prompt their guidance contrasts (None: no guidance)."""

    reference: "torch.Tensor"
    text: "torch.Tensor"
    uncond: Optional["torch.Tensor"]


def prompts(model: "DepthDiffusion", prompt: str, guidance: float) -> Prompts:
    empty = model.embed_text("")
    if not prompt:
        return Prompts(empty, empty, None)
    return Prompts(empty, model.embed_text(prompt), empty if guidance != 1.0 else None)


def reference_branch(model: "DepthDiffusion", reference: Reference, conditions: Prompts,
                     settings: "RGNVSettings") -> "ReferenceBranch":
    """The reference inverted and denoised once, its K/V recorded (``rgnv.prepare_reference``)."""
    from img2mesh.hifi123.rgnv import prepare_reference

    return prepare_reference(model.unet, alphas(model), reference.latents, reference.depth, conditions.reference,
                             settings, model.v_prediction)


def alphas(model: "DepthDiffusion") -> "torch.Tensor":
    """The schedule's ᾱ on the UNet's device."""
    return model.alphas_cumprod.to(model.unet.device)


def run_guided(work: Any, size: int, minimum: int, log: Any, what: str) -> Any:
    """``work(size)`` with ``size`` halved on CUDA out-of-memory (logged) until ``minimum``."""
    from img2mesh.utils.device import halving_on_out_of_memory

    return halving_on_out_of_memory(work, size, minimum, lambda smaller: log.warning(
        "%s: CUDA out of memory; retrying with %d at a time", what, smaller))
