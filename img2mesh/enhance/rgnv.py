"""HiFi-123's reference-guided novel-view enhancement (RGNV) on a depth-conditioned UNet (library code).

Both the reference and the coarse novel views are inverted with deterministic DDIM for the first
``inversion_steps`` (HiFi-123's ``l``) of ``steps``, each with its own depth map as the fifth input
channel (depth-based inversion reconstructs the reference nearly perfectly, where plain DDIM
inversion does not). Then the pairs (reference, novel view) are denoised together for the same
``l`` steps; from ``start_step`` and ``start_layer`` on, each novel view's self-attention reads its
reference's keys and values (``enhance/injection.py``), so the reference's texture moves into the
novel view while the novel view's own queries keep its layout. Classifier-free guidance applies when
a prompt is given and ``guidance`` is not 1 (with the empty prompt both branches are the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from img2mesh.enhance.injection import InjectionController, install
from img2mesh.enhance.inversion import invert, sample


@dataclass(frozen=True)
class RGNVSettings:
    """The schedule and the injection of one RGNV run (the ``enhance.*`` keys)."""

    steps: int  # the DDIM schedule's steps (HiFi-123: 50)
    inversion_steps: int  # l: steps inverted, then denoised (HiFi-123: 30 for novel views)
    start_step: int  # first denoising step (0-based) whose novel self-attention reads the reference's K/V
    start_layer: int  # first self-attention layer (forward order) that does
    guidance: float = 1.0  # classifier-free guidance of the joint denoising (1 = none)
    inject: bool = True


def depth_noise(unet: Any, latents: torch.Tensor, depth: torch.Tensor, t: int, text: torch.Tensor,
                uncond: Optional[torch.Tensor], guidance: float,
                v_prediction: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SD-2-depth's noise prediction: the latents with the depth map as a fifth channel, the text
    embedding as cross-attention context, and classifier-free guidance when ``uncond`` is given.

    With guidance the batch runs as ``[uncond…, cond…]``; the (reference, novel) pairs stay adjacent
    in both halves, as the injection needs. A v-prediction model (the scheduler config says so) is
    passed its ``alphas_cumprod`` as ``v_prediction`` and its output turned into ε = √ᾱ v + √(1−ᾱ) x."""
    x = torch.cat([latents, depth.to(latents)], 1)
    batch = x.shape[0]
    if uncond is None or guidance == 1.0:
        out = unet(x, t, encoder_hidden_states=text.expand(batch, -1, -1)).sample
    else:
        context = torch.cat([uncond.expand(batch, -1, -1), text.expand(batch, -1, -1)])
        without, with_text = unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample.chunk(2)
        out = without + guidance * (with_text - without)
    if v_prediction is None:
        return out
    alpha = v_prediction[t].to(latents)
    return alpha.sqrt() * out + (1 - alpha).sqrt() * latents


def pairs(reference: torch.Tensor, novel: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) and (V, C, h, w) -> (2V, C, h, w) laid out ``[ref, novel_0, ref, novel_1, …]``."""
    return torch.stack([reference.expand_as(novel), novel], 1).flatten(0, 1)


@torch.no_grad()
def enhance_latents(unet: Any, alphas_cumprod: torch.Tensor, reference: torch.Tensor, novel: torch.Tensor,
                    reference_depth: torch.Tensor, novel_depth: torch.Tensor, text: torch.Tensor,
                    uncond: Optional[torch.Tensor], settings: RGNVSettings,
                    v_prediction: bool = False) -> tuple[torch.Tensor, InjectionController]:
    """The novel views' latents (V, 4, h, w) after RGNV, and the controller (its ``injected`` list
    says at which (step, layer) the reference's K/V were read).

    ``reference`` (1, 4, h, w) and ``novel`` are clean latents; the depths are (·, 1, h, w) at the
    latent's size, already normalised as SD-2-depth expects; ``text`` / ``uncond`` are (1, L, D)
    embeddings of the prompt and of the empty prompt; ``v_prediction`` for a model trained on v.
    """
    v = alphas_cumprod if v_prediction else None
    # Inversion: no guidance (it only reconstructs), each view with its own depth.
    latents, depth = torch.cat([reference, novel]), torch.cat([reference_depth, novel_depth])
    trajectory = invert(lambda x, t: depth_noise(unet, x, depth, t, text, None, 1.0, v), latents, alphas_cumprod,
                        settings.steps, settings.inversion_steps)
    inverted = trajectory[-1]
    x = pairs(inverted[:1], inverted[1:])
    joint_depth = pairs(reference_depth, novel_depth)
    controller = InjectionController(settings.start_step, settings.start_layer, enabled=settings.inject)
    previous = install(unet, controller)
    try:
        def on_step(k: int) -> None:
            controller.step = k

        out = sample(lambda z, t: depth_noise(unet, z, joint_depth, t, text, uncond, settings.guidance, v), x,
                     alphas_cumprod, settings.steps, settings.inversion_steps, on_step=on_step)
    finally:
        unet.set_attn_processor(previous)
    return out.view(-1, 2, *out.shape[1:])[:, 1], controller
