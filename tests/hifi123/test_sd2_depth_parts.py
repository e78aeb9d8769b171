"""SD-2-depth's parts as the enhance stage wires them (tiny random stand-ins): the prompt's text
embedding, the masked depth condition at the latent's size, the VAE round trip's shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from img2mesh.hifi123.components import TINY_LATENT, tiny_sd2_depth


@pytest.fixture(scope="module")
def parts():
    return tiny_sd2_depth()


def test_the_prompt_is_embedded_as_the_unets_cross_attention_context(parts):
    empty, prompt = parts.embed_text(""), parts.embed_text("a detailed photo of the object")
    assert empty.shape == prompt.shape == (1, parts.tokenizer.model_max_length, parts.unet.config.cross_attention_dim)
    assert not torch.allclose(empty, prompt)  # the words reach the encoder
    assert torch.equal(parts.embed_text(""), empty)  # and nothing else does


def test_depth_is_scaled_over_the_object_and_the_background_lies_behind_it(parts):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    masks = np.zeros((2, 64, 64), bool)
    masks[:, 16:48, 8:40] = True
    depth = parts.depth(images, masks, TINY_LATENT)
    assert depth.shape == (2, 1, TINY_LATENT, TINY_LATENT)  # the UNet's fifth channel, at the latent's size
    inside = torch.zeros(TINY_LATENT, TINY_LATENT, dtype=torch.bool)
    inside[2:6, 1:5] = True  # the mask's cells at 1/8
    for d in depth[:, 0]:
        assert (d[~inside] == -1).all()
        # the object spans [-0.8, 1] of SD-2-depth's [-1, 1]; the background (-1) lies strictly behind it
        assert d[inside].min() == pytest.approx(-0.8) and d[inside].max() == pytest.approx(1.0)


def test_vae_round_trip_keeps_the_size_and_the_latent_is_eight_times_smaller(parts):
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    latents = parts.encode(images)
    assert parts.vae_factor == 8 and latents.shape == (3, 4, TINY_LATENT, TINY_LATENT)
    decoded = parts.decode(latents)
    assert decoded.shape == images.shape and decoded.min() >= -1 and decoded.max() <= 1
