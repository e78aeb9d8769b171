"""Masks of views: soft alpha, the threshold fallback that keeps holes open, the background remover
for views without alpha, and a mask term that keeps light parts of an object."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import torch
import trimesh
from PIL import Image

from img2mesh.app import load_config
from img2mesh.pipeline.models import ModelCache
from img2mesh.reconstruct.masks import RemoverMasks
from img2mesh.reconstruct.trainer import train
from img2mesh.reconstruct.views import load_views
from img2mesh.utils import cameras
from img2mesh.utils.hull import project

from helpers.scenes import RENDER, box_mesh, figure_with_a_light_head, render_views, small_field, small_settings


def test_alpha_masks_stay_soft(tmp_path):
    folder = render_views(box_mesh(), tmp_path / "v", size=32)
    for path in folder.glob("*.png"):  # half-transparent edge: a matte's soft alpha
        rgba = np.asarray(Image.open(path)).copy()
        rgba[..., 3] = np.where(rgba[..., 3] > 0, 200, 0)
        Image.fromarray(rgba).save(path)
    views = load_views(folder)
    assert views.mask_source == "alpha" and views.masks.dtype == np.float32
    assert np.unique(views.masks).tolist() == [0.0, np.float32(200 / 255)]
    assert np.array_equal(views.silhouettes, views.masks > 0)


def test_threshold_masks_keep_a_through_hole_open(tmp_path):
    """A ring seen from 30° above: the background through its hole is background in the mask (hole
    filling made it foreground, so the hull and the fit closed the ring with a membrane)."""
    ring = trimesh.creation.torus(major_radius=0.3, minor_radius=0.07)
    views = load_views(render_views(ring, tmp_path / "v", size=64, alpha=False))
    assert views.mask_source == "white-background threshold"
    x, y, _ = project(np.zeros((1, 3)), views.Ks[0], views.poses[0])  # the ring's centre, seen through the hole
    assert views.masks[0, y[0], x[0]] == 0
    assert views.masks[0].sum() > 200  # the ring itself is there


def fake_context(masks: str, random_weights: bool) -> SimpleNamespace:
    config = load_config(overrides=[f"reconstruct.masks={masks}", f"segment.random_weights={str(random_weights).lower()}",
                                    "segment.seg_size=64", "segment.matting_size=64"])
    return SimpleNamespace(stage="reconstruct", config=config, device="cpu", models=ModelCache())


def test_views_without_alpha_get_the_background_removers_soft_masks(tmp_path):
    """carvekit's real networks (untrained weights) make the masks, through the run's model cache
    (so a run shares the segment stage's remover); real masks need its pretrained weights."""
    images = np.ones((2, 40, 40, 3), np.float32)
    images[:, 10:30, 12:28] = [0.6, 0.2, 0.1]
    ctx = fake_context("remover", random_weights=True)
    masks, source = RemoverMasks(ctx)(images)
    assert source == "background remover (carvekit)"
    assert masks.shape == (2, 40, 40) and masks.dtype == np.float32 and 0 <= masks.min() <= masks.max() <= 1
    assert ctx.models.loaded() == {"carvekit": "cpu"}


def test_auto_masks_fall_back_to_the_threshold_without_the_removers_weights(monkeypatch, img2mesh_log):
    import img2mesh.segment.weights as weights

    monkeypatch.setattr(weights.CarvekitWeight, "locate", lambda self: None)
    images = np.ones((1, 32, 32, 3), np.float32)
    images[0, 8:24, 8:24] = 0.3
    ctx = fake_context("auto", random_weights=False)
    with img2mesh_log.at_level(logging.WARNING, logger="img2mesh"):
        masks, source = RemoverMasks(ctx)(images)
    assert source == "white-background threshold" and masks[0, 9:23, 9:23].all() and not masks[0, :8].any()
    assert "img2mesh weights download tracer_b7" in img2mesh_log.text
    assert ctx.models.loaded() == {}  # nothing was loaded


def test_a_near_white_part_survives_the_fit(tmp_path):
    """A figure whose head is light beige (as light as the white background in every channel) must
    keep its head: the colour term cannot tell head from background there, so the mask term alone
    holds it, and it must win against the colour term and the regulariser."""
    mesh, colors, head = figure_with_a_light_head()
    views = load_views(render_views(mesh, tmp_path / "v", size=64, colors=colors))
    field = small_field()
    train(field, views, small_settings(), RENDER, torch.device("cpu"))
    probes = torch.tensor(np.array([head, head + [0.06, 0.06, 0.05], head + [-0.06, 0.05, -0.04], [0, 0, -0.12]]),
                          dtype=torch.float32)
    with torch.no_grad():
        sdf = field.sdf(probes).squeeze(-1)
    assert (sdf < 0).all(), sdf  # inside the head (three points) and the body
    assert cameras.VIEW_COUNT == len(views.masks)
