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
    # misplaced views, registration on: their cameras moved until the silhouettes agree, then fitted as exact ones
    registering = dataclasses.replace(cfg, register=True)
    same, recipe, moved = choose(registering, misplaced, 0.6)
    facts = recipe.facts()
    assert recipe.name == "registered" and {k: getattr(same, k) for k in ACCURATE} == ACCURATE, facts
    assert facts["registered"] and facts["view_disagreement_registered"] < CONSISTENT < off, facts
    assert not np.allclose(moved.Ks, misplaced.Ks) and np.array_equal(moved.images, misplaced.images)
    # without registration they are fitted at the cameras given, with the levers
    same, recipe, unmoved = choose(dataclasses.replace(cfg, register=False), misplaced, 0.6)
    assert recipe.name == "tolerant" and unmoved is misplaced and "registered" not in recipe.facts()
    fixed, recipe, _ = choose(dataclasses.replace(cfg, adapt=False, register=False), views, 0.6)
    assert recipe.name == "as configured" and fixed.mask_margin == 2 and recipe.facts()["view_disagreement"] is None


def test_the_measure_does_not_depend_on_the_views_size(tmp_path):
    small = load_views(render_views(box_mesh(), tmp_path / "small", size=64))
    large = load_views(render_views(box_mesh(), tmp_path / "large", size=256))
    assert abs(disagreement(small, 0.6) - disagreement(large, 0.6)) < CONSISTENT / 2


def test_registration_reads_the_views_at_their_own_size(tmp_path, monkeypatch):
    """Training at 128², the cameras are registered on the 256² views and the moves applied at 128²."""
    from img2mesh.reconstruct import register as reg
    from img2mesh.utils.images import shrink

    large = shifted(load_views(render_views(box_mesh(), tmp_path / "large", size=256)), 4)
    Ks = large.Ks.copy()
    Ks[:, :2] *= 0.5
    small = dataclasses.replace(large, images=large.images[:, ::2, ::2], Ks=Ks,
                                masks=np.stack([shrink(m, 128) for m in large.masks]))
    seen = []
    move = reg.similarity(0.01, 0.0, 0.0, 0.0)  # a hundredth of the width to the right

    def found(views, bound, before=None):
        seen.append((views.size, before))
        return reg.Registration(np.repeat(move[None], 16, 0), 1, 0.01, 0.001)

    monkeypatch.setattr(reg, "register", found)
    cfg = dataclasses.replace(ReconstructConfig(), register=True)
    _, recipe, moved = choose(cfg, small, 0.6, native=lambda: large)
    assert seen == [((256, 256), None)]  # measured again on the views it moves
    assert recipe.name == "registered"  # they agree after it (0.001): the accurate levers
    np.testing.assert_allclose(moved.Ks[:, 0, 2] - small.Ks[:, 0, 2], 1.28)  # 1 % of 128 px
    assert recipe.facts()["register_shift_px_mean"] == 2.56  # in pixels of the views as given
    seen.clear()
    choose(cfg, small, 0.6)  # no other size to read: the training views themselves
    assert seen[0][0] == (128, 128) and seen[0][1] is not None


def test_views_that_still_disagree_after_registration_keep_the_levers(tmp_path, monkeypatch):
    from img2mesh.reconstruct import register as reg

    misplaced = shifted(load_views(render_views(box_mesh(), tmp_path / "views", size=128)), 2)
    monkeypatch.setattr(reg, "register", lambda views, bound, before=None: reg.Registration(
        np.repeat(np.eye(3)[None], 16, 0), 1, 0.02, 2 * CONSISTENT))  # better, not yet agreeing
    cfg = dataclasses.replace(ReconstructConfig(), register=True)
    same, recipe, _ = choose(cfg, misplaced, 0.6)
    assert recipe.name == "tolerant" and same is cfg and recipe.facts()["registered"], recipe.facts()
