"""HiFi-123's RGNV as library code (``hifi123/rgnv.py``) on a tiny random-weight SD-2-depth-shaped UNet:
injection off is plain depth-conditioned inversion + sampling, a novel view equal to the reference
is unchanged by injection, injection reads the reference at exactly the configured steps and layers,
and the reference is inverted and denoised once, whatever number of views read it."""

from __future__ import annotations

import pytest
import torch

from img2mesh.hifi123.inversion import invert, sample
from img2mesh.hifi123.rgnv import RGNVSettings, depth_noise, enhance_latents, prepare_reference

from helpers.diffusion import ALPHAS, tiny_depth_unet

SETTINGS = RGNVSettings(steps=10, inversion_steps=6, start_step=2, start_layer=1, guidance=1.0)


@pytest.fixture(scope="module")
def scene():
    unet = tiny_depth_unet()
    torch.manual_seed(3)
    reference, novel = torch.randn(1, 4, 8, 8), torch.randn(3, 4, 8, 8)
    depth_ref, depth_novel = torch.rand(1, 1, 8, 8), torch.rand(3, 1, 8, 8)
    text, uncond = torch.randn(1, 3, 16), torch.randn(1, 3, 16)
    return unet, reference, novel, depth_ref, depth_novel, text, uncond


def rgnv(unet, reference, novel, depth_ref, depth_novel, text, uncond, settings):
    """The reference prepared (with the prompt, unguided), then the novel views enhanced."""
    branch = prepare_reference(unet, ALPHAS, reference, depth_ref, text, settings)
    return enhance_latents(unet, ALPHAS, branch, novel, depth_novel, text, uncond, settings)


def test_injection_off_is_plain_depth_conditioned_inversion_and_sampling(scene):
    unet, reference, novel, depth_ref, depth_novel, text, _ = scene
    off = RGNVSettings(**{**SETTINGS.__dict__, "inject": False})
    got, controller = rgnv(unet, reference, novel, depth_ref, depth_novel, text, None, off)
    with torch.no_grad():
        predict = lambda x, t: depth_noise(unet, x, depth_novel, t, text, None, 1.0)  # noqa: E731
        inverted = invert(predict, novel, ALPHAS, off.steps, off.inversion_steps)[-1]
        plain = sample(predict, inverted, ALPHAS, off.steps, off.inversion_steps)
    assert got.shape == novel.shape and controller.injected == []
    assert torch.allclose(got, plain, atol=1e-4), (got - plain).abs().max()


def test_a_novel_view_equal_to_the_reference_is_unchanged_by_injection(scene):
    unet, reference, _, depth_ref, _, text, _ = scene
    same, same_depth = reference.expand(2, -1, -1, -1), depth_ref.expand(2, -1, -1, -1)
    on, _ = rgnv(unet, reference, same, depth_ref, same_depth, text, None, SETTINGS)
    off, _ = rgnv(unet, reference, same, depth_ref, same_depth, text, None,
                  RGNVSettings(**{**SETTINGS.__dict__, "inject": False}))
    assert torch.allclose(on, off, atol=1e-5)


def test_injection_reads_the_reference_at_exactly_the_configured_steps_and_layers(scene):
    unet, reference, novel, depth_ref, depth_novel, text, uncond = scene
    guided = RGNVSettings(**{**SETTINGS.__dict__, "guidance": 3.0})
    branch = prepare_reference(unet, ALPHAS, reference, depth_ref, text, guided)
    got, controller = enhance_latents(unet, ALPHAS, branch, novel, depth_novel, text, uncond, guided)
    expected = {(k, layer) for k in range(SETTINGS.start_step, SETTINGS.inversion_steps)
                for layer in range(SETTINGS.start_layer, controller.layers)}
    assert controller.layers >= 2 and set(controller.injected) == expected and set(branch.bank) == expected
    assert len(controller.injected) == len(expected)  # one batched call per layer and step, guidance included
    off, _ = rgnv(unet, reference, novel, depth_ref, depth_novel, text, uncond,
                  RGNVSettings(**{**SETTINGS.__dict__, "guidance": 3.0, "inject": False}))
    assert not torch.allclose(got, off, atol=1e-3)  # the reference's texture moved in
    assert all(type(p).__name__ != "InjectingSelfAttention" for p in unet.attn_processors.values())  # restored


def test_guidance_with_the_empty_prompt_changes_nothing_and_depth_is_the_fifth_channel(scene):
    unet, reference, novel, depth_ref, depth_novel, text, _ = scene
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        plain = depth_noise(unet, x, depth_novel[:2], 500, text, None, 1.0)
        guided = depth_noise(unet, x, depth_novel[:2], 500, text, text, 3.0)  # cond == uncond
        direct = unet(torch.cat([x, depth_novel[:2]], 1), 500, encoder_hidden_states=text.expand(2, -1, -1)).sample
        other_depth = depth_noise(unet, x, depth_novel[1:], 500, text, None, 1.0)
    assert torch.allclose(plain, guided, atol=1e-5) and torch.equal(plain, direct)
    assert not torch.allclose(plain, other_depth, atol=1e-4)


def test_a_v_prediction_model_is_turned_into_noise_in_closed_form(scene):
    unet, _, novel, _, depth_novel, text, _ = scene
    with torch.no_grad():
        v = depth_noise(unet, novel, depth_novel, 300, text, None, 1.0)
        eps = depth_noise(unet, novel, depth_novel, 300, text, None, 1.0, v_prediction=ALPHAS)
    a = ALPHAS[300]
    assert torch.allclose(eps, a.sqrt() * v + (1 - a).sqrt() * novel, atol=1e-6)


def test_the_reference_is_inverted_and_denoised_once_and_novel_batches_hold_novel_views_only(scene):
    """The UNet's calls, counted: 2·l for the reference (inversion, then its recorded denoising), then per
    chunk of novel views 2·l calls of that chunk's size (the reference is not in the batch again)."""
    unet, reference, novel, depth_ref, depth_novel, text, _ = scene
    calls = []
    handle = unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        branch = prepare_reference(unet, ALPHAS, reference, depth_ref, text, SETTINGS)
        reference_calls = list(calls)
        for part in (slice(0, 2), slice(2, 3)):
            enhance_latents(unet, ALPHAS, branch, novel[part], depth_novel[part], text, None, SETTINGS)
    finally:
        handle.remove()
    l_steps = SETTINGS.inversion_steps
    assert reference_calls == [1] * 2 * l_steps
    assert calls[len(reference_calls):] == [2] * 2 * l_steps + [1] * 2 * l_steps
