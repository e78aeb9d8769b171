"""Artist-ready meshes: UV unwrapping, texture baking, chart padding, textured exports, decimation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from img2mesh.errors import StageError
from img2mesh.mesh.export import export_mesh, to_world_frame
from img2mesh.mesh.texture import bake, pad_charts, rasterize_uv, sample_texture, texture_mesh
from img2mesh.mesh.unwrap import unwrap

CPU = torch.device("cpu")


def position_colour(points: np.ndarray) -> np.ndarray:
    """A known colour field: colour = position, mapped from [-0.5, 0.5] to [0, 1]."""
    return np.asarray(points) + 0.5


def random_surface_points(mesh: trimesh.Trimesh, count: int, seed: int = 0):
    """Random faces and barycentrics of a UV-mapped mesh: the 3-D points and their UVs."""
    rng = np.random.default_rng(seed)
    face = rng.integers(0, len(mesh.faces), count)
    bary = rng.dirichlet((2.0, 2.0, 2.0), count)  # away from the corners, where charts are seamed
    points = (mesh.vertices[mesh.faces[face]] * bary[..., None]).sum(1)
    uv = (np.asarray(mesh.visual.uv)[mesh.faces[face]] * bary[..., None]).sum(1)
    return points, uv


@pytest.fixture(scope="module")
def baked():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    textured, facts = texture_mesh(sphere, 256, position_colour, CPU)
    return sphere, textured, facts


def test_baking_a_known_colour_field_reproduces_it(baked):
    """Texels hold colour = position: bilinear lookups at random surface points give back their position
    within the texel's extent (a texel spans < 0.01 of the sphere here) plus 8-bit rounding."""
    _, textured, facts = baked
    texture = np.asarray(textured.visual.material.baseColorTexture)
    points, uv = random_surface_points(textured, 2000)
    looked_up = sample_texture(texture, uv) / 255.0
    error = np.abs(looked_up - position_colour(points))
    assert np.median(error) < 0.01 and np.percentile(error, 99) < 0.05, (np.median(error), error.max())
    assert 0.3 < facts["texture_coverage"] < 1.0 and facts["texture_size"] == 256


def test_uvs_are_in_the_unit_square_and_cover_every_face(baked):
    sphere, textured, _ = baked
    uv = np.asarray(textured.visual.uv)
    assert uv.min() >= 0.0 and uv.max() <= 1.0 and len(uv) == len(textured.vertices)
    assert len(textured.faces) == len(sphere.faces)
    # same surface: every textured vertex is one of the original ones (seams only duplicate vertices)
    assert np.isclose(textured.area, sphere.area) and len(textured.vertices) >= len(sphere.vertices)


def test_padding_fills_texels_outside_the_charts():
    image = np.zeros((8, 8, 3), np.uint8)
    covered = np.zeros((8, 8), bool)
    image[2, 2], covered[2, 2] = (255, 0, 0), True
    image[6, 6], covered[6, 6] = (0, 0, 255), True
    padded = pad_charts(image, covered)
    assert tuple(padded[0, 0]) == (255, 0, 0) and tuple(padded[7, 7]) == (0, 0, 255)
    assert tuple(padded[2, 2]) == (255, 0, 0) and (padded.sum(-1) > 0).all()


def test_uv_rasteriser_puts_texel_centres_in_their_triangle():
    """A triangle covering the lower-left half of UV space: texel (row, col) is inside when its
    centre has u + v <= 1 with v = 1 - (row + 0.5) / size."""
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    raster = rasterize_uv(uvs, np.array([[0, 1, 2]]), 16, CPU)
    rows, cols = np.mgrid[0:16, 0:16]
    expected = (cols + 0.5) / 16 + (1 - (rows + 0.5) / 16) <= 1.0
    assert np.array_equal(raster.mask.numpy(), expected)


def test_textured_glb_obj_and_vertex_coloured_ply_reload(baked, tmp_path):
    sphere, textured, _ = baked
    sphere = sphere.copy()
    sphere.visual.vertex_colors = np.tile([10, 200, 30, 255], (len(sphere.vertices), 1))
    written = export_mesh(sphere, tmp_path, ["glb", "obj", "ply"], textured)
    assert sorted(p.name for p in written) == ["mesh.glb", "mesh.mtl", "mesh.obj", "mesh.ply", "mesh_albedo.png"]
    for name in ("mesh.glb", "mesh.obj"):
        loaded = trimesh.load(tmp_path / name, force="mesh")
        assert loaded.visual.kind == "texture", name
        image = loaded.visual.material.baseColorTexture if name.endswith("glb") else loaded.visual.material.image
        assert image.size == (256, 256), name
        uv = np.asarray(loaded.visual.uv)
        assert uv.min() >= 0.0 and uv.max() <= 1.0, name
        # the texture still matches positions after the export frame round trip
        world = to_world_frame(loaded)
        points, uv = random_surface_points(world, 500, seed=1)
        error = np.abs(sample_texture(np.asarray(image.convert("RGB")), uv) / 255.0 - position_colour(points))
        assert np.median(error) < 0.01, name
    assert "Kd 1 1 1" in (tmp_path / "mesh.mtl").read_text() and "map_Kd mesh_albedo.png" in (tmp_path / "mesh.mtl").read_text()
    ply = trimesh.load(tmp_path / "mesh.ply")
    assert tuple(ply.visual.vertex_colors[0][:3]) == (10, 200, 30)


@pytest.mark.gpu
def test_the_rasteriser_gives_the_same_texture_on_cpu_and_cuda():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    unwrapped = unwrap(sphere.vertices, sphere.faces, 128)
    on_cpu, _ = bake(np.asarray(sphere.vertices), unwrapped, 128, position_colour, CPU)
    on_gpu, _ = bake(np.asarray(sphere.vertices), unwrapped, 128, position_colour, torch.device("cuda"))
    assert np.abs(on_cpu.astype(int) - on_gpu.astype(int)).max() <= 1


def test_a_crash_inside_xatlas_is_a_clear_error(monkeypatch):
    """xatlas segfaults on some large meshes; it runs in a child process so the run survives."""
    import sys

    import img2mesh.mesh.unwrap as unwrap_module

    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    monkeypatch.setattr(unwrap_module, "worker_command", lambda source, target: crash)
    sphere = trimesh.creation.icosphere(subdivisions=1)
    with pytest.raises(StageError, match=r"xatlas crashed \(SIGSEGV\) unwrapping 80 faces; lower --target-faces"):
        unwrap(sphere.vertices, sphere.faces, 64)


def test_mesh_stage_textures_decimates_and_keeps_watertight(tmp_path):
    """The mesh stage on an untrained field (a rough sphere): decimation to the budget, watertight
    kept, a texture of the configured size in the GLB, previews rendered from the texture."""
    from helpers.scenes import mesh_untrained_field

    out, info = mesh_untrained_field(tmp_path, ["mesh.resolution=64", "mesh.target_faces=1500",
                                                "mesh.texture_size=128", "mesh.formats=[glb,obj]"])
    assert abs(info["faces"] - 1500) <= 75 and info["watertight_before_decimation"] and info["watertight"]
    assert info["texture_size"] == 128 and {"mesh.glb", "mesh.obj", "mesh.mtl", "mesh_albedo.png"} <= set(info["files"])
    glb = trimesh.load(out / "mesh.glb", force="mesh")
    assert glb.visual.material.baseColorTexture.size == (128, 128) and len(glb.faces) == info["faces"]
    assert (out / "mesh_albedo.png").is_file() and (out / "preview.png").is_file()
    still = np.asarray(Image.open(out / "preview.png"))
    assert (still.reshape(-1, 3) < 250).any(1).mean() > 0.05  # the textured object is visible


def test_render_psnr_is_high_for_the_true_colours_and_low_for_grey(tmp_path):
    """The benchmark's texture check: the views' own colours re-rendered score far above flat grey."""
    from img2mesh.evaluation.metrics import render_psnr

    from helpers.scenes import box_mesh, render_views

    box = box_mesh()
    folder = render_views(box, tmp_path / "views", size=64)
    coloured = box.copy()
    rgb = ((np.asarray(box.vertices) * 0.8 + 0.5).clip(0, 1) * 255).round().astype(np.uint8)
    coloured.visual.vertex_colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)
    grey = box.copy()
    grey.visual.vertex_colors = np.tile([128, 128, 128, 255], (len(box.vertices), 1))
    true, flat = render_psnr(coloured, folder), render_psnr(grey, folder)
    assert true > 40 and flat < 25 and true > flat + 15, (true, flat)


def test_render_psnr_refuses_non_square_views_in_one_line(tmp_path):
    from img2mesh.errors import UsageError
    from img2mesh.evaluation.metrics import render_psnr

    folder = tmp_path / "views"
    folder.mkdir()
    for i in range(16):
        Image.new("RGBA", (48, 32), (200, 0, 0, 255)).save(folder / f"{i}.png")
    with pytest.raises(UsageError, match="needs square views, got 48x32"):
        render_psnr(trimesh.creation.box(), folder)
