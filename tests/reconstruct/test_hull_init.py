"""Starting NeuS from the masks' visual hull (``reconstruct.init: hull``) or generate's feedback fit
(``feedback``) instead of a sphere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from img2mesh.reconstruct.hull_init import HullSettings, fit_to_hull, hull_signed_distance
from img2mesh.reconstruct.views import load_views
from img2mesh.utils.hull import carve

from helpers.scenes import BOUND, box_mesh, render_views, small_field


def legged_table() -> trimesh.Trimesh:
    """A slab on four thin legs: thin parts far from any sphere, which NeuS's smoothness melts."""
    move = trimesh.transformations.translation_matrix
    parts = [trimesh.creation.box(extents=(0.62, 0.62, 0.06), transform=move((0, 0, 0.15)))]
    for x in (-0.25, 0.25):
        for y in (-0.25, 0.25):
            parts.append(trimesh.creation.box(extents=(0.06, 0.06, 0.4), transform=move((x, y, -0.1))))
    return trimesh.util.concatenate(parts)


def test_signed_distance_is_negative_exactly_inside_the_hull(tmp_path):
    views = load_views(render_views(box_mesh(), tmp_path / "v", size=48))
    distance = hull_signed_distance(views, BOUND, resolution=48)
    inside = carve(views.silhouettes, views.Ks, views.poses, 48, BOUND)
    assert np.array_equal(distance < 0, inside)
    cell = 2 * BOUND / 47
    assert distance.max() > 0.1 and distance.min() < -0.1  # distances in world units, not cells
    assert np.abs(distance[inside]).min() == pytest.approx(0.5 * cell)  # the zero level between cells


def agreement_with_hull(field, views, resolution: int = 24) -> float:
    """The fraction of a grid over the cube where the field's inside is the hull's."""
    line = np.linspace(-BOUND, BOUND, resolution)
    grid = torch.tensor(np.stack(np.meshgrid(line, line, line, indexing="ij"), -1).reshape(-1, 3), dtype=torch.float32)
    inside = carve(views.silhouettes, views.Ks, views.poses, resolution, BOUND).reshape(-1)
    with torch.no_grad():
        return float(((field.sdf(grid) < 0).numpy() == inside).mean())


def test_the_field_starts_where_the_hull_is(tmp_path):
    """After the fit the field's inside is the hull's, legs included (a sphere has no legs)."""
    views = load_views(render_views(legged_table(), tmp_path / "v", size=64))
    field = small_field()
    before = agreement_with_hull(field, views)
    info = fit_to_hull(field, views, BOUND, HullSettings(steps=250, variance=0.5, tolerance=0, eikonal_weight=0.1),
                       seed=0, device=torch.device("cpu"))
    assert field.variance.item() == 0.5  # training starts sharp: the surface is already in place
    leg_tips = torch.tensor([[0.25, 0.25, -0.28], [-0.25, -0.25, -0.28]])
    with torch.no_grad():
        assert (field.sdf(leg_tips) < 0).all(), field.sdf(leg_tips)
    after = agreement_with_hull(field, views)
    assert before < 0.9 and after > 0.97 and info["hull_fit_error"] < 0.02, (before, after, info)


def test_an_empty_hull_is_refused_so_the_sphere_stays(tmp_path):
    views = load_views(render_views(box_mesh(), tmp_path / "v", size=32))
    views.masks[:] = 0.0  # masks that agree on nothing
    with pytest.raises(ValueError, match="empty"):
        fit_to_hull(small_field(), views, BOUND, HullSettings(steps=5, variance=0.5, tolerance=0, eikonal_weight=0.1),
                    seed=0, device=torch.device("cpu"))


def run_reconstruct(folder, out, *extra):
    import json

    from typer.testing import CliRunner

    from img2mesh.cli import app

    args = ["reconstruct", str(folder), "-o", str(out), "--preset", "smoke", "--device", "cpu", "-q",
            "--set", "reconstruct.steps=2", "--set", "reconstruct.rays_per_step=64", "--set", "reconstruct.init_steps=150",
            "--set", "mesh.resolution=32", "--set", "mesh.texture=false", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "img2mesh.json").read_text())["stages"]["reconstruct"]["info"], result.output


def test_feedback_start_fits_the_grid_generate_left_and_falls_back_to_the_hull(tmp_path):
    """``reconstruct.init: feedback`` starts from ``feedback/sdf.npy`` beside the views (generate's
    last feedback fit): here a ball off to one side, which the box's hull does not contain."""
    folder = render_views(box_mesh(), tmp_path / "views", size=32, padding=2)
    without, log = run_reconstruct(folder, tmp_path / "a", "--set", "reconstruct.init=feedback")
    assert without["start"] == "hull" and "no feedback fit to start from" in log
    line = np.linspace(-BOUND, BOUND, 48)
    x, y, z = np.meshgrid(line, line, line, indexing="ij")
    ball = np.sqrt((x + 0.3) ** 2 + y**2 + z**2) - 0.2
    (folder / "feedback").mkdir()
    np.save(folder / "feedback" / "sdf.npy", ball.astype(np.float32))
    info, _ = run_reconstruct(folder, tmp_path / "b", "--set", "reconstruct.init=feedback")
    assert info["start"] == "feedback" and info["feedback_fit_error"] < 0.02
    assert abs(info["feedback_fraction"] - (ball < 0).mean()) < 1e-6
    from img2mesh.reconstruct.storage import load_field

    field = load_field(tmp_path / "b" / "reconstruct", "cpu")
    with torch.no_grad():  # the ball's centre is inside after 2 training steps; the box's far corner is not
        assert field.sdf(torch.tensor([[-0.3, 0.0, 0.0]])).item() < 0
        assert field.sdf(torch.tensor([[0.35, -0.2, 0.2]])).item() > 0
