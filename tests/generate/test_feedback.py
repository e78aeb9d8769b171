"""The feedback blend (issue 15's operator): weight 0 changes nothing, weight 1 makes x̂₀ the renders
where they cover the object, and DDIM continues from the blended x̂₀."""

from __future__ import annotations

import torch

from img2mesh.generate.feedback import blend_noise
from img2mesh.utils.ddim import predicted_x0

ALPHA = torch.tensor(0.37)


def case():
    torch.manual_seed(0)
    x_t, noise, renders = torch.randn(2, 16, 4, 8, 8), torch.randn(2, 16, 4, 8, 8), torch.randn(2, 16, 4, 8, 8)
    coverage = torch.zeros(2, 16, 1, 8, 8)
    coverage[..., 2:6, 2:6] = 1.0
    return x_t, noise, renders, coverage


def test_weight_zero_is_bit_identical():
    x_t, noise, renders, coverage = case()
    assert torch.equal(blend_noise(x_t, noise, ALPHA, renders, coverage, 0.0), noise)


def test_weight_one_makes_the_prediction_the_renders_where_they_cover():
    x_t, noise, renders, coverage = case()
    x0 = predicted_x0(x_t, blend_noise(x_t, noise, ALPHA, renders, coverage, 1.0), ALPHA)
    inside = coverage.expand_as(x0).bool()
    assert torch.allclose(x0[inside], renders[inside], atol=1e-5)
    assert torch.allclose(x0[~inside], predicted_x0(x_t, noise, ALPHA)[~inside], atol=1e-5)  # elsewhere kept


def test_half_weight_lands_half_way():
    x_t, noise, renders, coverage = case()
    before = predicted_x0(x_t, noise, ALPHA)
    x0 = predicted_x0(x_t, blend_noise(x_t, noise, ALPHA, renders, coverage, 0.5), ALPHA)
    inside = coverage.expand_as(x0).bool()
    assert torch.allclose(x0[inside], (0.5 * (before + renders))[inside], atol=1e-5)
