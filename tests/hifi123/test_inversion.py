"""HiFi-123's building blocks: DDIM inversion and sampling maths, and MasaCtrl-style K/V injection on
a tiny random-weight diffusers UNet laid out as SD-2-depth's (5 input channels: latent + depth)."""

from __future__ import annotations

import pytest
import torch

from img2mesh.hifi123.injection import InjectionController, install
from img2mesh.hifi123.inversion import ddim_timesteps, invert, sample

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


def test_injecting_processor_equals_diffusers_attention_when_off_and_when_recording(parts):
    unet, latents, depth, text = parts
    plain = predict(unet, latents, depth, text, 500)
    for mode in ("off", "record"):
        controller = InjectionController(start_step=0, start_layer=0, mode=mode)
        previous = install(unet, controller)
        try:
            assert controller.layers == 4  # one per transformer block: down 1, mid 1, up 2
            assert torch.allclose(predict(unet, latents, depth, text, 500), plain, atol=1e-5)
            assert controller.injected == []
        finally:
            unet.set_attn_processor(previous)
    assert set(controller.bank) == {(0, layer) for layer in range(4)}  # the recording kept every layer's K/V


def run_with(unet, controller, work):
    previous = install(unet, controller)
    try:
        return work()
    finally:
        unet.set_attn_processor(previous)


def test_a_novel_view_equal_to_the_reference_is_unchanged_by_injection(parts):
    unet, latents, depth, text = parts
    one, one_depth, one_text = latents[:1], depth[:1], text[:1]
    plain = predict(unet, one, one_depth, one_text, 500)
    recorder = InjectionController(start_step=0, start_layer=0, mode="record")
    run_with(unet, recorder, lambda: predict(unet, one, one_depth, one_text, 500))
    replay = InjectionController(start_step=0, start_layer=0, mode="replay", bank=recorder.bank)
    injected = run_with(unet, replay, lambda: predict(unet, one.repeat(2, 1, 1, 1), one_depth.repeat(2, 1, 1, 1),
                                                      one_text.repeat(2, 1, 1), 500))
    assert replay.injected and torch.allclose(injected, plain.repeat(2, 1, 1, 1), atol=1e-5)


def test_injection_happens_at_exactly_the_configured_steps_and_layers(parts):
    """A 4-step sampling with injection from step 2 and layer 2 (the first up-block layer; layers count
    down, mid, up): the reference's K/V are recorded at steps 2 and 3 in layers 2 and 3 only, the novel
    view reads them there and nowhere else; recording leaves the reference's own result unchanged."""
    unet, latents, depth, text = parts
    reference, novel = latents[:1], latents[1:]

    def sampled(x, d, controller=None):
        set_step = None if controller is None else (lambda k: setattr(controller, "step", k))
        return sample(lambda z, t: predict(unet, z, d, text[:1], t), x, ALPHAS, 10, 4, on_step=set_step)

    recorder = InjectionController(start_step=2, start_layer=2, mode="record")
    recorded = run_with(unet, recorder, lambda: sampled(reference, depth[:1], recorder))
    assert sorted(recorder.bank) == [(2, 2), (2, 3), (3, 2), (3, 3)]
    assert torch.allclose(recorded, sampled(reference, depth[:1]), atol=1e-5)  # recording changes nothing
    replay = InjectionController(start_step=2, start_layer=2, mode="replay", bank=recorder.bank)
    injected = run_with(unet, replay, lambda: sampled(novel, depth[1:], replay))
    assert sorted(set(replay.injected)) == [(2, 2), (2, 3), (3, 2), (3, 3)]
    up_layers = [p.layer for name, p in unet_processors_while(unet, replay) if name.startswith("up_blocks")]
    assert up_layers == [2, 3]
    assert not torch.allclose(injected, sampled(novel, depth[1:]), atol=1e-3)  # the novel view read the reference
