"""The texture bake from the views and the photo (``mesh/bake.py``, ``mesh/photo.py``): on a box whose
walls carry a known pattern, seen from the 16 SyncDreamer cameras."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from img2mesh.mesh.bake import Source, SurfaceColours, blend, weighted_median
from img2mesh.mesh.photo import register_photo, silhouette, similarity_matrix, warp
from img2mesh.utils import cameras
from img2mesh.utils.raster import rasterize

CPU = torch.device("cpu")
HALF = np.array([0.25, 0.2, 0.15])  # the box's half extents
FALLBACK = (1.0, 0.0, 1.0)  # what the stand-in field's colour network answers: magenta


class BoxField(torch.nn.Module):
    """A stand-in for a trained field: the box's exact SDF, and a colour network that answers magenta
    (so the tests can tell where the bake fell back to the field)."""

    def sdf_and_gradient(self, x: torch.Tensor, create_graph: bool):
        """On and inside the box (where the bake asks): distance to the nearest face, and that face's normal."""
        q = x.abs() - torch.tensor(HALF, dtype=x.dtype)
        nearest = q.argmax(-1)
        grad = torch.nn.functional.one_hot(nearest, 3).to(x.dtype) * torch.sign(x)
        return q.max(-1).values, torch.zeros(len(x), 1), grad

    def color(self, x, normal, view, features, view_ids=None):
        return torch.tensor(FALLBACK).expand(len(x), 3)


def pattern(points: np.ndarray) -> np.ndarray:
    """A known colour on the box: stripes 0.1 wide along y and z, two colours per axis."""
    stripes_y = (np.floor(points[:, 1] / 0.1) % 2)[:, None]
    stripes_z = (np.floor(points[:, 2] / 0.1) % 2)[:, None]
    return 0.15 + 0.7 * np.concatenate([stripes_y, stripes_z, 1 - stripes_y], 1)


def box() -> trimesh.Trimesh:
    return trimesh.creation.box(extents=2 * HALF).subdivide().subdivide()


def render_source(mesh: trimesh.Trimesh, K: np.ndarray, pose: np.ndarray, size: int, colour=pattern) -> Source:
    """The box at one camera, each pixel coloured by ``colour`` of its surface point, on white."""
    raster = rasterize(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces),
                       torch.tensor(K, dtype=torch.float32), torch.tensor(pose, dtype=torch.float32), size, size)
    covered = raster.mask.numpy()
    face = raster.face.numpy()[covered]
    bary = raster.bary.numpy()[covered].astype(np.float64)
    points = (mesh.vertices[mesh.faces[face]] * bary[..., None]).sum(1)
    image = np.ones((size, size, 3))
    image[covered] = colour(points)
    return Source(image, covered.astype(np.float32), K, pose, "view")


def sources(mesh: trimesh.Trimesh, size: int = 256) -> list[Source]:
    K = cameras.intrinsics(size)
    return [render_source(mesh, K, pose, size) for pose in cameras.target_poses()]


def wall_points(count: int, seed: int = 0, axis: int = 0, sign: float = 1.0) -> np.ndarray:
    """Random points on one face of the box (default: the vertical wall facing +x), away from its edges."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-0.8, 0.8, (count, 3)) * HALF
    points[:, axis] = sign * HALF[axis]
    return points


@pytest.fixture(scope="module")
def scene():
    mesh = box()
    return mesh, sources(mesh)


def test_a_pattern_on_a_vertical_wall_comes_back_as_the_pattern(scene):
    """The −normal field query washed walls to an average; the projection returns each stripe's colour."""
    mesh, views = scene
    colours = SurfaceColours(BoxField(), CPU, views, mesh.vertices, mesh.faces)
    points = wall_points(2000)
    baked, truth = colours(points), pattern(points)
    error = np.abs(baked - truth).max(1)
    # a stripe is ~19 pixels wide: only points within a pixel or two of its edges mix the two colours
    assert np.median(error) < 0.03 and np.mean(error < 0.1) > 0.8, (np.median(error), np.mean(error < 0.1))
    assert baked.std(0).min() > 0.8 * truth.std(0).min()  # the contrast is kept, not averaged away
    assert colours.stats.from_field_only == 0 and colours.stats.from_views == len(points)


def test_a_point_no_view_sees_takes_the_fields_colour_and_is_counted(scene):
    """The bottom faces away from every camera (all at elevation 30°): the field fills it."""
    mesh, views = scene
    colours = SurfaceColours(BoxField(), CPU, views, mesh.vertices, mesh.faces)
    bottom = wall_points(300, axis=2, sign=-1.0)
    baked = colours(bottom)
    assert np.allclose(baked, FALLBACK, atol=1e-6)
    assert colours.stats.from_field_only == len(bottom) and colours.stats.facts()["bake_field_only"] == 1.0


def test_robust_blending_rejects_a_view_that_disagrees(scene):
    """View 0 (the one facing +x most) recoloured red: the mean is pulled towards red, the robust blend
    and the median are not."""
    mesh, views = scene
    rogue = list(views)
    rogue[0] = render_source(mesh, views[0].K, views[0].pose, 256, colour=lambda p: np.tile([0.9, 0.05, 0.05], (len(p), 1)))
    points = wall_points(1500, seed=1)
    truth = pattern(points)
    errors = {}
    for how in ("mean", "median", "robust"):
        baked = SurfaceColours(BoxField(), CPU, rogue, mesh.vertices, mesh.faces, how=how)(points)
        errors[how] = float(np.abs(baked - truth).mean())
    assert errors["robust"] < 0.04 and errors["median"] < 0.04, errors
    assert errors["mean"] > 2.5 * errors["robust"], errors


def test_weighted_median_and_blend_on_known_numbers():
    colours = np.array([[[0.1, 0.1, 0.1]], [[0.2, 0.2, 0.2]], [[0.9, 0.9, 0.9]]])
    weights = np.array([[1.0], [1.0], [3.0]])
    assert np.allclose(weighted_median(colours, weights), 0.9)
    assert np.allclose(weighted_median(colours, np.array([[2.0], [1.0], [1.0]])), 0.1)
    assert np.allclose(blend(colours, np.ones((3, 1)), "mean"), 0.4)
    # robust: two agreeing views win over one outlier of the same weight (the mean is dragged to 0.4)
    assert 0.1 <= blend(colours, np.ones((3, 1)), "robust")[0, 0] <= 0.2


def test_the_photo_has_priority_where_it_sees_the_surface_head_on(scene):
    """A photo that says 'green' at the input camera: head-on texels are green, the far side keeps the views."""
    mesh, views = scene
    K, pose = cameras.intrinsics(256), cameras.look_at_pose(0.0, math.radians(30))
    photo = render_source(mesh, K, pose, 256, colour=lambda p: np.tile([0.1, 0.8, 0.1], (len(p), 1)))
    colours = SurfaceColours(BoxField(), CPU, views, mesh.vertices, mesh.faces, photo=photo)
    front, back = wall_points(500, seed=2), wall_points(500, seed=3, sign=-1.0)
    assert np.allclose(np.median(colours(front), 0), [0.1, 0.8, 0.1], atol=0.02)
    assert np.abs(colours(back) - pattern(back)).max(1).mean() < 0.05
    assert colours.stats.from_photo >= 0.9 * len(front)


def test_registration_recovers_a_known_shift_and_scale_of_the_photo():
    mesh = box()
    K, elevation = cameras.intrinsics(256), 30.0
    mask = silhouette(mesh.vertices, mesh.faces, K, cameras.look_at_pose(0.0, math.radians(elevation)), 256, CPU)
    moved = warp(mask, similarity_matrix(np.array([5.0, -3.0]), math.log(1.04), 0.0, 128.0))
    camera = register_photo(mesh.vertices, mesh.faces, moved, elevation, CPU)
    assert camera.shift_px == pytest.approx([5.0, -3.0], abs=0.6) and camera.scale == pytest.approx(1.04, abs=0.01)
    assert camera.iou_after > 0.97 and camera.iou_after > camera.iou_before + 0.05
    # the registered camera renders the mesh where the photo has it
    K2, pose2 = camera.at_size(256)
    again = silhouette(mesh.vertices, mesh.faces, K2, pose2, 256, CPU)
    assert (again & moved).sum() / (again | moved).sum() > 0.97


def test_registration_corrects_the_elevation():
    mesh = box()
    K = cameras.intrinsics(256)
    photo = silhouette(mesh.vertices, mesh.faces, K, cameras.look_at_pose(0.0, math.radians(36.0)), 256, CPU)
    camera = register_photo(mesh.vertices, mesh.faces, photo, 30.0, CPU)
    assert camera.iou_after > 0.97 and 2.0 <= camera.elevation_correction_deg <= 8.0


@pytest.mark.parametrize("photo_of", ["the mesh", "another object"])
def test_the_mesh_stage_bakes_from_the_fitted_views_and_the_registered_photo(tmp_path, photo_of):
    """A run's mesh stage on an untrained field (a rough sphere) whose fitted views show blue and whose
    photo shows green: the texture is blue where only views see it, green where the photo sees it
    head-on; the registration, the photo-beside-render image and the atlas are written. A photo whose
    silhouette no registration matches (a thin bar) is another object's: it is not projected."""
    import json

    from PIL import Image

    from img2mesh.app import load_config
    from img2mesh.console import ConsoleReporter
    from img2mesh.mesh.stage import STAGE as MESH
    from img2mesh.pipeline.contract import Stage
    from img2mesh.pipeline.runner import Runner
    from img2mesh.reconstruct.fitted import save_fitted
    from img2mesh.reconstruct.storage import save_field
    from img2mesh.reconstruct.views import Views
    from img2mesh.utils.files import atomic_write_json

    from helpers.scenes import small_field

    field = small_field()
    from img2mesh.mesh.extract import marching_cubes, sdf_grid

    surface = marching_cubes(sdf_grid(field, 48, 0.6, CPU), 0.6)
    blue, green = (lambda p: np.tile([0.1, 0.2, 0.9], (len(p), 1))), (lambda p: np.tile([0.1, 0.8, 0.1], (len(p), 1)))

    def segment(ctx):
        pose = cameras.look_at_pose(0.0, math.radians(30.0))
        photo = render_source(surface, cameras.intrinsics(256), pose, 256, colour=green)
        if photo_of == "another object":  # a thin green bar across the frame
            photo.mask[:] = 0
            photo.mask[120:136, 16:240] = 1
            photo.image[:] = [0.1, 0.8, 0.1]
        rgba = np.dstack([photo.image, photo.mask]) * 255
        Image.fromarray(rgba.round().astype(np.uint8)).save(ctx.out_dir / "rgba.png")

    def elevation(ctx):
        atomic_write_json(ctx.out_dir / "elevation.json", {"elevation_deg": 30.0})

    def reconstruct(ctx):
        save_field(field, ctx.out_dir)
        K, poses = cameras.intrinsics(64), cameras.target_poses()
        rendered = [render_source(surface, K, pose, 64, colour=blue) for pose in poses]
        views = Views(np.stack([v.image for v in rendered]).astype(np.float32),
                      np.stack([v.mask for v in rendered]), np.repeat(K[None], 16, 0), poses, "alpha")
        save_fitted(ctx.out_dir, views, poses, np.tile(np.eye(3, 4), (16, 1, 1)))

    stages = [Stage("segment", "", (), ("rgba.png",), (), run=segment),
              Stage("elevation", "", (), ("elevation.json",), (), run=elevation),
              Stage("reconstruct", "", (), ("field.json",), (), run=reconstruct), MESH]
    image = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(image)
    config = load_config(overrides=["mesh.resolution=48", "mesh.texture_size=128", "mesh.preview=false",
                                    "segment.crop_size=-1"])
    result = Runner(stages, config, "cpu", ConsoleReporter(quiet=True)).run(image, tmp_path / "out")
    assert result.ok, result.error
    out = tmp_path / "out"
    info = json.loads((out / "img2mesh.json").read_text())["stages"]["mesh"]["info"]
    assert {"photo_camera.json", "photo_compare.png", "mesh_albedo.png"} <= {p.name for p in (out / "mesh").iterdir()}
    texture = np.asarray(Image.open(out / "mesh" / "mesh_albedo.png").convert("RGB")) / 255.0
    greenish = (texture[..., 1] > 0.6) & (texture[..., 2] < 0.3)
    blueish = (texture[..., 2] > 0.7) & (texture[..., 1] < 0.35)
    if photo_of == "another object":
        assert info["photo_iou_after"] < 0.7 and info["photo_projected"] is False
        assert greenish.mean() == 0 and blueish.mean() > 0.2, (greenish.mean(), blueish.mean())
        assert "the photo is not projected onto it" in (out / "img2mesh.log").read_text()
        return
    assert info["bake"] == "views" and info["photo_iou_after"] >= info["photo_iou_before"] > 0.8
    assert info["photo_projected"] is True
    assert info["bake_photo"] > 0.05 and info["bake_seen_by_views"] > 0.5
    assert greenish.mean() > 0.04 and blueish.mean() > 0.2, (greenish.mean(), blueish.mean())
    from img2mesh.mesh.panel import panel  # the report shows the photo beside the mesh, and the atlas

    page = panel(out, json.loads((out / "img2mesh.json").read_text())["stages"])
    assert "mesh/photo_compare.png" in page and "mesh/mesh_albedo.png" in page and "photo registered" in page
