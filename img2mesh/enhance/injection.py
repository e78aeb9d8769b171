"""MasaCtrl-style attention injection for HiFi-123's RGNV (library code).

The reference and the novel view are denoised in one batch laid out as pairs ``[ref, novel, ref,
novel, …]`` (one pair per guidance branch). From a start step and a start layer on, the novel view's
self-attention reads the reference's keys and values instead of its own, so the reference's texture
flows into the novel view while the novel view's queries (its layout, hence its geometry) stay.
Cross-attention (the text prompt) is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F


@dataclass
class InjectionController:
    """Which denoising steps and self-attention layers inject; the current step; a record of injections.

    ``start_step``: the first denoising step (0-based) that injects; ``start_layer``: the first
    self-attention layer (0-based, numbered by :func:`install`) that injects; ``enabled=False``
    leaves every layer as it is.
    """

    start_step: int
    start_layer: int
    enabled: bool = True
    step: int = 0
    layers: int = 0  # self-attention layers that :func:`install` gave a processor
    injected: list[tuple[int, int]] = field(default_factory=list)  # (step, layer) pairs, for tests and logs

    def active(self, layer: int) -> bool:
        return self.enabled and self.step >= self.start_step and layer >= self.start_layer


class InjectingSelfAttention:
    """A diffusers attention processor for one self-attention layer (``attn1``) of the UNet."""

    def __init__(self, controller: InjectionController, layer: int) -> None:
        self.controller, self.layer = controller, layer

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, temb: Optional[torch.Tensor] = None,
                 **kwargs: Any) -> torch.Tensor:
        if hidden_states.ndim != 3 or attn.residual_connection or attn.group_norm is not None:
            raise ValueError("attention injection expects a transformer block's self-attention (B, N, C)")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        if self.controller.active(self.layer):
            key, value = _reference_for_novel(key), _reference_for_novel(value)
            self.controller.injected.append((self.controller.step, self.layer))
        batch, heads = query.shape[0], attn.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(query), split(key), split(value))
        out = out.transpose(1, 2).reshape(batch, -1, heads * out.shape[-1]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def _reference_for_novel(x: torch.Tensor) -> torch.Tensor:
    """In a ``[ref, novel, ref, novel, …]`` batch, every novel entry replaced by its reference."""
    if x.shape[0] % 2:
        raise ValueError("attention injection needs the batch as (reference, novel) pairs")
    pairs = x.view(x.shape[0] // 2, 2, *x.shape[1:])
    return torch.stack([pairs[:, 0], pairs[:, 0]], 1).reshape(x.shape)


def install(unet: torch.nn.Module, controller: InjectionController) -> dict[str, Any]:
    """Give every self-attention layer of a diffusers UNet an injecting processor.

    Returns the processors it replaced: ``unet.set_attn_processor(previous)`` restores them.

    Layers are numbered in the order a forward pass runs them (down blocks, mid block, up blocks),
    as MasaCtrl counts them; diffusers lists the up blocks before the mid block.
    """
    previous = dict(unet.attn_processors)
    processors = dict(previous)
    order = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    self_attention = sorted((name for name in previous if name.endswith("attn1.processor")),
                            key=lambda name: order.get(name.split(".")[0], 3))  # stable: block order kept
    for layer, name in enumerate(self_attention):
        processors[name] = InjectingSelfAttention(controller, layer)
    unet.set_attn_processor(processors)
    controller.layers = len(self_attention)
    return previous
