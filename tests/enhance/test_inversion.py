"""HiFi-123's building blocks: DDIM inversion and sampling maths, and MasaCtrl-style K/V injection on
a tiny random-weight diffusers UNet laid out as SD-2-depth's (5 input channels: latent + depth)."""

from __future__ import annotations

import pytest
import torch

from img2mesh.enhance.injection import InjectionController, install
from img2mesh.enhance.inversion import ddim_timesteps, invert, sample

from helpers.diffusion import ALPHAS, tiny_depth_unet


def test_one_inversion_step_is_the_closed_form_ddim_update():
    x0 = torch.randn(1, 4, 8, 8)
    noise = torch.randn_like(x0)
    t = ddim_timesteps(ALPHAS, 50)[0]
    x_t = invert(lambda x, step: noise, x0, ALPHAS, 50, 1)[1]
    assert torch.allclose(x_t, ALPHAS[t].sqrt() * x0 + (1 - ALPHAS[t]).sqrt() * noise, atol=1e-6)


def test_inversion_then_sampling_returns_the_start_when_the_noise_does_not_depend_on_the_latent():
    """DDIM inversion is exact for a predictor that ignores the latent: every move is undone."""
    x0 = torch.randn(2, 4, 8, 8)
    table = {t: torch.randn(2, 4, 8, 8) for t in ddim_timesteps(ALPHAS, 50)}
    trajectory = invert(lambda x, t: table[t], x0, ALPHAS, 50, 30)
    assert len(trajectory) == 31 and not torch.allclose(trajectory[-1], x0, atol=0.1)
    seen = []
    back = sample(lambda x, t: table[t], trajectory[-1], ALPHAS, 50, 30, on_step=seen.append)
    assert torch.allclose(back, x0, atol=1e-4) and seen == list(range(30))


def predict(unet, latents, depth, text, t):
    with torch.no_grad():
        return unet(torch.cat([latents, depth], 1), t, encoder_hidden_states=text).sample


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(1)
    return tiny_depth_unet(), torch.randn(2, 4, 8, 8), torch.randn(2, 1, 8, 8), torch.randn(2, 3, 16)


def unet_processors_while(unet, controller):
    """The injecting processors ``install`` gives each self-attention layer, by name (then removed)."""
    previous = install(unet, controller)
    installed = [(name, p) for name, p in unet.attn_processors.items() if name.endswith("attn1.processor")]
    unet.set_attn_processor(previous)
    return installed


def test_injecting_processor_equals_diffusers_attention_when_off(parts):
    unet, latents, depth, text = parts
    plain = predict(unet, latents, depth, text, 500)
    controller = InjectionController(start_step=0, start_layer=0, enabled=False)
    previous = install(unet, controller)
    try:
        assert controller.layers == 4  # one per transformer block: down 1, mid 1, up 2
        assert torch.allclose(predict(unet, latents, depth, text, 500), plain, atol=1e-5)
        assert controller.injected == []
    finally:
        unet.set_attn_processor(previous)


def test_a_novel_view_equal_to_the_reference_is_unchanged_by_injection(parts):
    unet, latents, depth, text = parts
    same = latents[:1].repeat(2, 1, 1, 1)
    same_depth, same_text = depth[:1].repeat(2, 1, 1, 1), text[:1].repeat(2, 1, 1)
    plain = predict(unet, same, same_depth, same_text, 500)
    controller = InjectionController(start_step=0, start_layer=0)
    previous = install(unet, controller)
    try:
        injected = predict(unet, same, same_depth, same_text, 500)
    finally:
        unet.set_attn_processor(previous)
    assert controller.injected and torch.allclose(injected, plain, atol=1e-5)


def test_injection_happens_at_exactly_the_configured_steps_and_layers(parts):
    """A 4-step sampling with injection from step 2 and layer 2 (the first up-block layer; layers count
    down, mid, up): the novel branch reads the reference's K/V at steps 2 and 3 in layers 2 and 3 and
    nowhere else; the reference branch is never changed, the novel one is."""
    unet, latents, depth, text = parts
    controller = InjectionController(start_step=2, start_layer=2)
    previous = install(unet, controller)

    def set_step(k: int) -> None:
        controller.step = k

    try:
        injected = sample(lambda x, t: predict(unet, x, depth, text, t), latents, ALPHAS, 10, 4, on_step=set_step)
    finally:
        unet.set_attn_processor(previous)
    plain = sample(lambda x, t: predict(unet, x, depth, text, t), latents, ALPHAS, 10, 4)
    assert sorted(set(controller.injected)) == [(2, 2), (2, 3), (3, 2), (3, 3)]
    up_layers = [p.layer for name, p in unet_processors_while(unet, controller) if name.startswith("up_blocks")]
    assert up_layers == [2, 3]
    assert torch.allclose(injected[0], plain[0], atol=1e-5)  # the reference denoises as without injection
    assert not torch.allclose(injected[1], plain[1], atol=1e-3)  # the novel view read the reference
