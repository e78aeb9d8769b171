"""MasaCtrl-style attention injection for HiFi-123's RGNV and RGSD (library code).

The reference is denoised once on its own while its self-attention keys and values are *recorded*
(``mode="record"``); every novel view is then denoised with its self-attention *reading* the
recorded reference K/V instead of its own (``mode="replay"``), from a start step and a start layer
on, so the reference's texture flows into the novel view while the novel view's queries (its layout,
hence its geometry) stay. The reference is thus inverted and denoised once per run, however many
views (or refinement iterations) read it, and a novel batch holds novel views only. Cross-attention
(the text prompt) is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F

Bank = dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]  # (step, layer) -> the reference's (K, V)


@dataclass
class InjectionController:
    """Which denoising steps and self-attention layers take part; the current step; the K/V bank.

    ``start_step``: the first denoising step (0-based) that injects; ``start_layer``: the first
    self-attention layer (0-based, numbered by :func:`install`) that does. ``mode``: ``record`` keeps
    the K/V of those (step, layer) pairs in ``bank``; ``replay`` replaces the batch's K/V there by
    the bank's; ``off`` leaves every layer as it is. ``injected`` lists the replayed pairs.
    """

    start_step: int
    start_layer: int
    mode: Literal["record", "replay", "off"] = "replay"
    bank: Bank = field(default_factory=dict)
    step: int = 0
    layers: int = 0  # self-attention layers that :func:`install` gave a processor
    injected: list[tuple[int, int]] = field(default_factory=list)  # (step, layer) pairs, for tests and logs

    def active(self, layer: int) -> bool:
        return self.mode != "off" and self.step >= self.start_step and layer >= self.start_layer


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
        controller = self.controller
        if controller.active(self.layer):
            pair = (controller.step, self.layer)
            if controller.mode == "record":
                controller.bank[pair] = (key[:1].detach(), value[:1].detach())
            else:
                recorded_key, recorded_value = controller.bank[pair]
                key = recorded_key.to(key).expand(key.shape[0], -1, -1)
                value = recorded_value.to(value).expand(value.shape[0], -1, -1)
                controller.injected.append(pair)
        batch, heads = query.shape[0], attn.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(query), split(key), split(value))
        out = out.transpose(1, 2).reshape(batch, -1, heads * out.shape[-1]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


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
