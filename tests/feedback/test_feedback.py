"""3D-aware feedback during sampling: the blend (weight 0 changes nothing, weight 1 makes x̂₀ the
renders where they cover the object), the hook in the sampler, the fitted model, the stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from img2mesh.app import load_config
from img2mesh.cli import app
from img2mesh.feedback.operator import FeedbackSettings, SamplingFeedback, ViewFitter, blend_noise, psnr
from img2mesh.utils.ddim import predicted_x0

from helpers.scenes import box_mesh, render_views

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




@pytest.fixture(scope="module")
def tiny_model():
    from img2mesh.generate.loading import load_syncdreamer

    model, _ = load_syncdreamer("tiny", "random")
    return model


def settings(steps=(1, 2), weight=0.5, fit_steps=5, size=16, *extra):
    """The run's feedback settings for these keys (the rest: the defaults)."""
    config = load_config(overrides=[f"generate.feedback.steps={list(steps)}", f"generate.feedback.weight={weight}",
                                    f"generate.feedback.fit_steps={fit_steps}", f"generate.feedback.image_size={size}",
                                    "generate.feedback.rays_per_step=128", *extra])
    return FeedbackSettings.from_config(config)


class FlatFitter:
    """A stand-in 3D model: every view renders as one grey, covering the whole image."""

    def __init__(self, size):
        self.size, self.fitted = size, []

    def fit(self, images):
        self.fitted.append(images.shape)

    def render_views(self):
        return np.full((16, self.size, self.size, 3), 0.3), np.ones((16, self.size, self.size))


def test_weight_zero_leaves_the_sampler_bit_identical(tiny_model):
    from img2mesh.generate.model import Guidance
    from img2mesh.generate.sampler import SamplerSettings, sample_latents, seeded_randn

    model = tiny_model
    image, elevation = torch.zeros(1, 3, 256, 256), torch.full((1,), 0.5)
    sampler = SamplerSettings(Guidance("cfg", (1.0,)), 2, 1.0, 16, "sample")
    plain = sample_latents(model, image, elevation, sampler, seeded_randn(0, torch.device("cpu")))
    hook = SamplingFeedback(model, settings(weight=0.0), 1, 0, torch.device("cpu"))
    hooked = sample_latents(model, image, elevation, sampler, seeded_randn(0, torch.device("cpu")), feedback=hook)
    assert torch.equal(plain, hooked) and hook.records == []


def test_weight_one_makes_x0_the_encoded_renders_at_feedback_steps_only(tiny_model):
    model = tiny_model
    hook = SamplingFeedback(model, settings(steps=(2,), weight=1.0), 1, 0, torch.device("cpu"))
    hook.fitters = [FlatFitter(16)]
    x_t, noise = torch.randn(1, 16, 4, 32, 32), torch.randn(1, 16, 4, 32, 32)
    assert hook(0, x_t, noise, ALPHA) is noise  # step 1: no feedback
    blended = hook(1, x_t, noise, ALPHA)  # step 2
    renders = hook.encode(torch.full((1, 16, 3, 16, 16), 0.3))
    assert torch.allclose(predicted_x0(x_t, blended, ALPHA), renders, atol=1e-4)
    assert hook.fitters[0].fitted == [(16, 16, 16, 3)]  # the decoded x̂₀ at the fitting size
    assert [r["step"] for r in hook.records] == [2] and hook.records[0]["seconds"] >= 0


def test_the_fitted_model_explains_the_views_and_continues_between_fits(tmp_path):
    size = 32
    folder = render_views(box_mesh(), tmp_path / "box", size=size, alpha=False)
    views = np.stack([np.asarray(Image.open(p), dtype=np.float32) / 255 for p in sorted(folder.glob("*.png"))])
    from img2mesh.utils import cameras

    Ks = np.repeat(cameras.intrinsics(size)[None], 16, 0)
    fitter = ViewFitter(Ks, cameras.target_poses(), settings((1,), 0.5, 60, size), 0, torch.device("cpu"))
    fitter.fit(views)
    colour, opacity = fitter.render_views()
    silhouettes = views.min(-1) < 0.9
    iou = ((opacity > 0.5) & silhouettes).sum() / ((opacity > 0.5) | silhouettes).sum()
    assert iou > 0.8, iou  # the renders cover the object where the views show it
    assert psnr(colour, views) > psnr(np.ones_like(views), views) + 3
    first = [p.detach().clone() for p in fitter.field.parameters()]
    fitter.fit(views)
    assert fitter.fits == 2
    moved = max((a - p).abs().max().item() for a, p in zip(first, fitter.field.parameters()))
    assert 0 < moved < 0.1  # continued from the first fit, not started again


TINY = ["--set", "generate.model=tiny", "--set", "generate.random_weights=true", "--set", "generate.steps=2",
        "--set", "generate.guidance=cfg", "--set", "generate.cfg_scale=1.0", "--elevation", "30",
        "--until", "generate", "--device", "cpu", "-q", "--set", "generate.feedback.fit_steps=5",
        "--set", "generate.feedback.image_size=16", "--set", "generate.feedback.rays_per_step=128"]


def test_a_run_with_feedback_keeps_renders_and_records_them_and_resumes(tmp_path):
    image = tmp_path / "in.png"
    cutout = np.zeros((48, 48, 4), np.uint8)
    cutout[8:40, 12:36] = (200, 30, 30, 255)
    Image.fromarray(cutout).save(image)
    args = ["run", str(image), "-o", str(tmp_path / "out"), *TINY, "--set", "generate.feedback.steps=[2]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    strip = tmp_path / "out" / "generate" / "sample_0" / "feedback" / "step_02.png"
    assert Image.open(strip).size == (16 * 16, 16)
    grid = np.load(strip.parent / "sdf.npy", allow_pickle=False)  # what reconstruct.init: feedback starts from
    assert grid.shape == (96, 96, 96) and grid.dtype == np.float32 and (grid < 0).any() and (grid > 0).any()
    manifest = json.loads((tmp_path / "out" / "img2mesh.json").read_text())
    info = manifest["stages"]["generate"]["info"]["feedback"]
    assert info["steps"] == [2] and info["weight"] == 0.5 and [r["step"] for r in info["per_step"]] == [2]
    assert info["seconds"] > 0 and len(info["per_step"][0]["fit_psnr"]) == 1
    before = (tmp_path / "out" / "generate" / "sample_0" / "03.png").read_bytes()
    again = CliRunner().invoke(app, args)  # same settings: nothing to redo
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "out" / "img2mesh.json").read_text())["stages"]["generate"] == manifest["stages"]["generate"]
    assert (tmp_path / "out" / "generate" / "sample_0" / "03.png").read_bytes() == before


@pytest.mark.parametrize("setting, message", [
    ("generate.feedback.steps=[3]", "beyond generate.steps"),
    ("generate.feedback.weight=1.5", "generate.feedback.weight: must be at most 1"),
    ("generate.feedback.steps=[0]", "generate.feedback.steps: must be at least 1"),
])
def test_feedback_settings_that_cannot_work_are_one_line(tmp_path, setting, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "in.png"), "-o", str(out), *TINY, "--set", setting])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_the_fitted_field_is_the_configured_kind():
    from img2mesh.utils import cameras

    chosen = settings((1,), 0.5, 5, 16, "generate.feedback.field=hashgrid")
    fitter = ViewFitter(np.repeat(cameras.intrinsics(16)[None], 16, 0), cameras.target_poses(), chosen, 0,
                        torch.device("cpu"))
    assert chosen.field.kind == "hashgrid" and fitter.field.config.kind == "hashgrid" and fitter.field.encoding is not None


def test_the_users_widths_rate_and_robust_terms_reach_the_fitted_model():
    """generate.feedback's own keys set the fast model; reconstruct's robust terms apply to its fit."""
    chosen = settings((1,), 0.5, 7, 16, "generate.feedback.hidden=32", "generate.feedback.layers=2",
                      "generate.feedback.learning_rate=0.002", "generate.feedback.samples_per_ray=24",
                      "reconstruct.color_loss=l1", "reconstruct.mask_margin=3", "reconstruct.hull_tolerance=1",
                      "reconstruct.appearance_dim=4")
    assert (chosen.field.hidden, chosen.field.layers, chosen.field.skip_at) == (32, 2, 1)
    assert chosen.field.appearance_dim == 4 and chosen.field.appearance_views == 16
    assert chosen.train.learning_rate == 0.002 and chosen.train.steps == 7 and chosen.hull.steps == 7
    assert chosen.train.color_loss == "l1" and chosen.train.mask_margin == 3 and chosen.hull.tolerance == 1
    assert chosen.render.coarse_samples + chosen.render.fine_samples == 24
