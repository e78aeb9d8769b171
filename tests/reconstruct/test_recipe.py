"""The recipe adapted to how much the views disagree (``reconstruct/recipe.py``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from img2mesh.reconstruct.config import ReconstructConfig
from img2mesh.reconstruct.recipe import ACCURATE, CONSISTENT, choose, disagreement
from img2mesh.reconstruct.views import load_views

from helpers.scenes import box_mesh, render_views


def shifted(views, pixels: int, seed: int = 0):
    """Each view's image and mask moved by up to ``pixels`` in x and y (its own draw): misplaced views."""
    rng = np.random.default_rng(seed)
    images, masks = views.images.copy(), views.masks.copy()
    for i in range(len(images)):
        dx, dy = rng.integers(-pixels, pixels + 1, 2)
        images[i] = np.roll(images[i], (dy, dx), (0, 1))
        masks[i] = np.roll(masks[i], (dy, dx), (0, 1))
    return dataclasses.replace(views, images=images, masks=masks)


def test_exact_views_get_the_accurate_recipe_and_misplaced_ones_are_registered_and_tolerated(tmp_path):
    views = load_views(render_views(box_mesh(), tmp_path / "views", size=128))
    # 4 px of a 256² view, as far as generated views are off (registration pins a small box's roll
    # down less well at 128²)
    misplaced = shifted(load_views(render_views(box_mesh(), tmp_path / "large", size=256)), 4)
    exact = disagreement(views, 0.6)
    off = disagreement(misplaced, 0.6)
    assert exact < CONSISTENT / 2 and off > 2 * CONSISTENT, (exact, off)
    cfg = ReconstructConfig()  # the robust levers as configured by default
    adapted, recipe, same_views = choose(cfg, views, 0.6)
    assert recipe.name == "accurate" and {k: getattr(adapted, k) for k in ACCURATE} == ACCURATE
    assert recipe.facts()["view_disagreement"] == round(exact, 4) and same_views is views and recipe.moves is None
    # misplaced views, registration on: their cameras moved until the silhouettes agree, the levers as configured
    registering = dataclasses.replace(cfg, register=True)
    same, recipe, moved = choose(registering, misplaced, 0.6)
    facts = recipe.facts()
    assert recipe.name == "tolerant" and same is registering and same.mask_margin == 2 and same.pose_refine, facts
    assert facts["registered"] and facts["view_disagreement_registered"] < CONSISTENT < off, facts
    assert not np.allclose(moved.Ks, misplaced.Ks) and np.array_equal(moved.images, misplaced.images)
    # without registration (the default) they are fitted at the cameras given
    same, recipe, unmoved = choose(cfg, misplaced, 0.6)
    assert recipe.name == "tolerant" and unmoved is misplaced and "registered" not in recipe.facts()
    fixed, recipe, _ = choose(dataclasses.replace(cfg, adapt=False, register=False), views, 0.6)
    assert recipe.name == "as configured" and fixed.mask_margin == 2 and recipe.facts()["view_disagreement"] is None


def test_the_measure_does_not_depend_on_the_views_size(tmp_path):
    small = load_views(render_views(box_mesh(), tmp_path / "small", size=64))
    large = load_views(render_views(box_mesh(), tmp_path / "large", size=256))
    assert abs(disagreement(small, 0.6) - disagreement(large, 0.6)) < CONSISTENT / 2
