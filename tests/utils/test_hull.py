"""Visual hulls (``utils/hull.py``): the strict intersection and the tolerant hull of disagreeing silhouettes."""

from __future__ import annotations

import numpy as np

from img2mesh.reconstruct.views import load_views
from img2mesh.utils.hull import background_votes, carve, inside_all

from helpers.scenes import BOUND, box_mesh, render_views


def test_the_tolerant_hull_keeps_what_one_misplaced_silhouette_cuts_off(tmp_path):
    views = load_views(render_views(box_mesh(), tmp_path / "v", size=64))
    exact = carve(views.silhouettes, views.Ks, views.poses, 48, BOUND)
    misplaced = views.silhouettes.copy()
    misplaced[3] = np.roll(misplaced[3], 6, axis=1)  # one view 6 px off, as a generated view can be
    strict = carve(misplaced, views.Ks, views.poses, 48, BOUND)
    tolerant = carve(misplaced, views.Ks, views.poses, 48, BOUND, tolerance=1)
    lost_strict = (exact & ~strict).sum() / exact.sum()
    lost_tolerant = (exact & ~tolerant).sum() / exact.sum()
    assert lost_strict > 0.05, lost_strict  # the intersection loses a slab of the box
    assert lost_tolerant == 0.0, lost_tolerant  # one dissenting view carves nothing
    assert tolerant.sum() < 1.5 * exact.sum()  # and the hull is still a box, not the whole cube


def test_no_view_voting_background_is_the_strict_intersection(tmp_path):
    views = load_views(render_views(box_mesh(), tmp_path / "v", size=32))
    line = np.linspace(-BOUND, BOUND, 20)
    points = np.stack(np.meshgrid(line, line, line, indexing="ij"), -1).reshape(-1, 3)
    votes = background_votes(points, views.silhouettes, views.Ks, views.poses)
    inside = inside_all(points, views.silhouettes, views.Ks, views.poses)
    assert inside.any() and np.array_equal(votes == 0, inside)
    assert carve(views.silhouettes, views.Ks, views.poses, 20, BOUND, tolerance=16).all()
