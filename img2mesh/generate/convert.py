"""Converting the official SyncDreamer ``state_dict`` to this package's module layout.

UNet and VAE go through diffusers' own LDM converters; the CLIP image tower through the OpenAI →
transformers key mapping below; the depth transformers, volume nets, time embedding,
``cc_projection`` and buffers map 1:1. Before anything is converted the official keys are
checked against the expected manifest, so a wrong file fails with the keys that are wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional

import torch

from img2mesh.errors import WeightsError

if TYPE_CHECKING:
    from img2mesh.generate.model import SyncDreamer

UNET_PREFIX = "model.diffusion_model."
DEPTH_PREFIXES = (UNET_PREFIX + "middle_conditions.", UNET_PREFIX + "output_conditions.")
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "clip_image_encoder.model."
CLIP_VISUAL = CLIP_PREFIX + "visual."
ONE_TO_ONE_PREFIXES = ("spatial_volume.", "time_embed.", "cc_projection.")
BUFFERS = ("betas", "alphas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
           "posterior_variance", "posterior_log_variance_clipped", "poses", "Ks", "azimuth")
FULL_MANIFEST = Path(__file__).parent / "data" / "syncdreamer_keys.json"

Shapes = Mapping[str, list[int]]


def full_manifest() -> dict[str, list[int]]:
    """Every key and shape of the released checkpoint."""
    return json.loads(FULL_MANIFEST.read_text())["keys"]


def check_keys(state: Mapping[str, torch.Tensor], expected: Shapes, source: str) -> None:
    """Raise a WeightsError naming missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if list(state[k].shape) != list(expected[k]))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            shown = ", ".join(
                f"{k} {list(state[k].shape)} != {expected[k]}" if label == "wrong shape" else k for k in keys[:3])
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label} ({shown}{more})")
    if problems:
        raise WeightsError(f"{source} is not a SyncDreamer checkpoint of this model: {'; '.join(problems)}")


def _convert_clip(state: Mapping[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    v = CLIP_VISUAL
    out = {
        "vision_model.embeddings.patch_embedding.weight": state[v + "conv1.weight"],
        "vision_model.embeddings.class_embedding": state[v + "class_embedding"],
        "vision_model.embeddings.position_embedding.weight": state[v + "positional_embedding"],
        "vision_model.pre_layrnorm.weight": state[v + "ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state[v + "ln_pre.bias"],
        "vision_model.post_layernorm.weight": state[v + "ln_post.weight"],
        "vision_model.post_layernorm.bias": state[v + "ln_post.bias"],
        "visual_projection.weight": state[v + "proj"].t().contiguous(),  # OpenAI stores x @ proj
    }
    for i in range(layers):
        src, dst = f"{v}transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for name, part in zip(("q", "k", "v"), state[src + "attn.in_proj_weight"].chunk(3, 0)):
            out[f"{dst}self_attn.{name}_proj.weight"] = part.contiguous()
        for name, part in zip(("q", "k", "v"), state[src + "attn.in_proj_bias"].chunk(3, 0)):
            out[f"{dst}self_attn.{name}_proj.bias"] = part.contiguous()
        for ours, theirs in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                             ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            for p in ("weight", "bias"):
                out[f"{dst}{ours}.{p}"] = state[f"{src}{theirs}.{p}"]
    return out


def convert_official(state: Mapping[str, torch.Tensor], model: "SyncDreamer",
                     expected: Optional[Shapes] = None, source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """Official ``SyncMultiviewDiffusion.state_dict()`` -> ``model.state_dict()`` layout (float32).

    ``expected`` is the official key manifest to check against (the released model's by default
    for the full config); the result is also loaded strictly by :func:`load_converted`.
    """
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    if expected is not None:
        check_keys(state, expected, source)
    state = {k: v.float() for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    unet = {k: v for k, v in state.items() if k.startswith(UNET_PREFIX) and not k.startswith(DEPTH_PREFIXES)}
    for k, v in convert_ldm_unet_checkpoint(unet, dict(model.unet.base.config)).items():
        out[f"unet.base.{k}"] = v
    for k, v in state.items():
        if k.startswith(DEPTH_PREFIXES):
            out["unet." + k[len(UNET_PREFIX):]] = v
        elif k.startswith(ONE_TO_ONE_PREFIXES) or k in BUFFERS:
            out[k] = v
    vae = {k: v for k, v in state.items() if k.startswith(VAE_PREFIX)}
    for k, v in convert_ldm_vae_checkpoint(vae, dict(model.vae.config)).items():
        out[f"vae.{k}"] = v
    for k, v in _convert_clip(state, model.config.clip.layers).items():
        out[f"clip.{k}"] = v
    return out


def load_converted(model: "SyncDreamer", converted: Mapping[str, torch.Tensor], source: str) -> None:
    """Load converted weights strictly; any gap is a WeightsError naming the keys."""
    ours = model.state_dict()
    expected = {k: list(v.shape) for k, v in ours.items()}
    check_keys(converted, expected, source)
    model.load_state_dict(dict(converted), strict=True)
