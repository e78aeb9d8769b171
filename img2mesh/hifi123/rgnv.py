"""HiFi-123's reference-guided novel-view enhancement (RGNV) on a depth-conditioned UNet (library code).

The reference is inverted with deterministic DDIM for the first ``inversion_steps`` (HiFi-123's
``l``) of ``steps`` with its own depth map as the fifth input channel (depth-based inversion
reconstructs it nearly perfectly, where plain DDIM inversion does not), then denoised once while its
self-attention K/V are recorded (:func:`prepare_reference`): once per run, whatever reads it. Each
batch of novel views is inverted the same way with its depths and denoised for the same ``l`` steps;
from ``start_step`` and ``start_layer`` on, its self-attention reads the recorded reference K/V
(``hifi123/injection.py``), so the reference's texture moves into the novel view while its own
queries keep its layout. The reference branch runs unguided (conditioned on the prompt); the novel
views are guided (classifier-free, ``guidance``) when a prompt is given, as the official code does.
RGSD (the refine stage) stops the denoising early (``stop``) and reads the latent and noise there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from img2mesh.hifi123.injection import Bank, InjectionController, install
from img2mesh.hifi123.inversion import denoise_to, invert
from img2mesh.utils.settings import fixed


@dataclass(frozen=True)
class RGNVSettings:
    """The schedule and the injection of one RGNV run (the ``enhance.*`` or ``refine.*`` keys, :meth:`from_config`)."""

    steps: int  # the DDIM schedule's steps (HiFi-123: 50 for RGNV, 20 for RGSD)
    inversion_steps: int  # l: steps inverted, then denoised (HiFi-123: 30 for RGNV, 12 for RGSD)
    start_step: int  # first denoising step (0-based) whose novel self-attention reads the reference's K/V
    start_layer: int  # first self-attention layer (forward order) that does
    guidance: float  # classifier-free guidance of the novel views (1 = none)
    inject: bool = fixed(True, "the reference's K/V injection (off only to compare with plain DDIM)")

    @classmethod
    def from_config(cls, section: Any, model: Any) -> "RGNVSettings":
        """A stage's schedule (``enhance`` or ``refine``: steps, inversion_steps, start_step, guidance) with
        the shared injection layer (``sd2_depth.start_layer``)."""
        return cls(section.steps, section.inversion_steps, section.start_step, model.start_layer, section.guidance)


def check_schedule(section: Any, prefix: str) -> None:
    """A stage's schedule that RGNV can run: l within T, injection starting inside the l steps."""
    from img2mesh.errors import UsageError

    if section.inversion_steps > section.steps:
        raise UsageError(f"config key {prefix}inversion_steps: {section.inversion_steps} is more than {prefix}steps "
                         f"({section.steps})")
    if section.start_step >= section.inversion_steps:
        raise UsageError(f"config key {prefix}start_step: {section.start_step} leaves no step to inject at (l = "
                         f"{prefix}inversion_steps = {section.inversion_steps})")


@dataclass
class ReferenceBranch:
    """The reference after its one inversion and its one recorded denoising."""

    inverted: torch.Tensor  # (1, 4, h, w) at the l-th timestep
    bank: Bank  # its self-attention K/V at the injecting (step, layer) pairs
    layers: int  # self-attention layers of the UNet


@dataclass
class Denoised:
    """Novel views denoised to a level: the latents, the noise of the last step, ᾱ there."""

    latents: torch.Tensor
    noise: Optional[torch.Tensor]
    alpha: torch.Tensor


def depth_noise(unet: Any, latents: torch.Tensor, depth: torch.Tensor, t: int, text: torch.Tensor,
                uncond: Optional[torch.Tensor], guidance: float,
                v_prediction: Optional[torch.Tensor] = None, split: bool = False) -> torch.Tensor:
    """SD-2-depth's noise prediction: the latents with the depth map as a fifth channel, the text
    embedding as cross-attention context, and classifier-free guidance when ``uncond`` is given.

    With guidance the batch runs as ``[uncond…, cond…]`` (``split``: as two calls, half the memory).
    A v-prediction model (the scheduler config says so) is passed its ``alphas_cumprod`` as
    ``v_prediction`` and its output turned into ε = √ᾱ v + √(1−ᾱ) x."""
    x = torch.cat([latents, depth.to(latents)], 1)
    batch = x.shape[0]
    if uncond is None or guidance == 1.0:
        out = unet(x, t, encoder_hidden_states=text.expand(batch, -1, -1)).sample
    else:
        if split:
            without = unet(x, t, encoder_hidden_states=uncond.expand(batch, -1, -1)).sample
            with_text = unet(x, t, encoder_hidden_states=text.expand(batch, -1, -1)).sample
        else:
            context = torch.cat([uncond.expand(batch, -1, -1), text.expand(batch, -1, -1)])
            without, with_text = unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample.chunk(2)
        out = without + guidance * (with_text - without)
    if v_prediction is None:
        return out
    alpha = v_prediction[t].to(latents)
    return alpha.sqrt() * out + (1 - alpha).sqrt() * latents


def _injecting(unet: Any, controller: InjectionController, work: Any) -> Any:
    """Run ``work(on_step)`` with the UNet's self-attention under ``controller``; processors restored."""
    previous = install(unet, controller)
    try:
        def on_step(k: int) -> None:
            controller.step = k

        return work(on_step)
    finally:
        unet.set_attn_processor(previous)


@torch.no_grad()
def prepare_reference(unet: Any, alphas_cumprod: torch.Tensor, reference: torch.Tensor, reference_depth: torch.Tensor,
                      text: torch.Tensor, settings: RGNVSettings, v_prediction: bool = False) -> ReferenceBranch:
    """Invert the clean reference latent (1, 4, h, w) with its depth, then denoise it unguided with
    the prompt's ``text`` embedding, recording its K/V where the novel views will read them."""
    v = alphas_cumprod if v_prediction else None

    def predict(x: torch.Tensor, t: int) -> torch.Tensor:
        return depth_noise(unet, x, reference_depth, t, text, None, 1.0, v)

    inverted = invert(predict, reference, alphas_cumprod, settings.steps, settings.inversion_steps)[-1]
    controller = InjectionController(settings.start_step, settings.start_layer,
                                     mode="record" if settings.inject else "off")
    _injecting(unet, controller, lambda on_step: denoise_to(predict, inverted, alphas_cumprod, settings.steps,
                                                            settings.inversion_steps, 0, on_step))
    return ReferenceBranch(inverted, controller.bank, controller.layers)


@torch.no_grad()
def invert_novel(unet: Any, alphas_cumprod: torch.Tensor, novel: torch.Tensor, depth: torch.Tensor,
                 text: torch.Tensor, settings: RGNVSettings, v_prediction: bool = False) -> torch.Tensor:
    """Clean novel latents (V, 4, h, w) inverted for l steps with their depths (no guidance: inversion
    only reconstructs)."""
    v = alphas_cumprod if v_prediction else None
    return invert(lambda x, t: depth_noise(unet, x, depth, t, text, None, 1.0, v), novel, alphas_cumprod,
                  settings.steps, settings.inversion_steps)[-1]


@torch.no_grad()
def denoise_novel(unet: Any, alphas_cumprod: torch.Tensor, reference: ReferenceBranch, inverted: torch.Tensor,
                  depth: torch.Tensor, text: torch.Tensor, uncond: Optional[torch.Tensor], settings: RGNVSettings,
                  v_prediction: bool = False, stop: int = 0, split: bool = False) -> tuple[Denoised, InjectionController]:
    """Inverted novel latents denoised to level ``stop`` with the reference's K/V injected; the
    controller's ``injected`` says at which (step, layer) pairs (``split``: guidance in two calls)."""
    v = alphas_cumprod if v_prediction else None
    controller = InjectionController(settings.start_step, settings.start_layer,
                                     mode="replay" if settings.inject else "off", bank=reference.bank)

    def predict(x: torch.Tensor, t: int) -> torch.Tensor:
        return depth_noise(unet, x, depth, t, text, uncond, settings.guidance, v, split)

    latents, noise, alpha = _injecting(unet, controller, lambda on_step: denoise_to(
        predict, inverted, alphas_cumprod, settings.steps, settings.inversion_steps, stop, on_step))
    return Denoised(latents, noise, alpha), controller


def enhance_latents(unet: Any, alphas_cumprod: torch.Tensor, reference: ReferenceBranch, novel: torch.Tensor,
                    novel_depth: torch.Tensor, text: torch.Tensor, uncond: Optional[torch.Tensor],
                    settings: RGNVSettings, v_prediction: bool = False) -> tuple[torch.Tensor, InjectionController]:
    """The novel views' latents (V, 4, h, w) after RGNV, and the controller.

    ``novel`` are clean latents, ``novel_depth`` (V, 1, h, w) their depth conditions at the latent's
    size; ``text`` / ``uncond`` are (1, L, D) embeddings of the prompt and of the empty prompt
    (``uncond`` None: no guidance); ``v_prediction`` for a model trained on v.
    """
    inverted = invert_novel(unet, alphas_cumprod, novel, novel_depth, text, settings, v_prediction)
    denoised, controller = denoise_novel(unet, alphas_cumprod, reference, inverted, novel_depth, text, uncond,
                                         settings, v_prediction)
    return denoised.latents, controller
