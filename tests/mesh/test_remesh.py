"""Quad remeshing (--remesh quad): pure quads near the surface, a re-baked texture, an OBJ that keeps quads."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from img2mesh.mesh.remesh import QuadMesh, bake_quads, quad_atlas, quad_points, quad_remesh, read_obj_polygons, write_quad_obj
from img2mesh.mesh.texture import sample_texture

pytest.importorskip("pyinstantmeshes", reason="pyinstantmeshes has no wheel for this Python/platform")


def position_colour(points: np.ndarray) -> np.ndarray:
    """A known colour field that changes fast enough to tell points of one quad apart."""
    return 0.5 + 0.5 * np.sin(6.0 * np.asarray(points))


@pytest.fixture(scope="module")
def quads() -> QuadMesh:
    sphere = trimesh.creation.icosphere(subdivisions=4)
    return quad_remesh(sphere.vertices, sphere.faces, 1200)


def test_remesh_gives_quads_on_the_surface_near_the_budget(quads):
    assert quads.quads.shape[1] == 4
    assert 600 <= len(quads.quads) <= 2400, len(quads.quads)  # within a factor 2 of the budget
    radii = np.linalg.norm(quads.vertices, axis=1)
    assert np.abs(radii - 1).max() < 0.02  # vertices on the unit sphere
    assert len(np.unique(quads.quads)) == len(quads.vertices)  # every vertex belongs to a quad


def test_native_progress_stays_off_stdout(capfd):
    sphere = trimesh.creation.icosphere(subdivisions=2)
    quad_remesh(sphere.vertices, sphere.faces, 200)
    assert capfd.readouterr().out == ""  # --json needs stdout to itself


def test_rebaked_texture_gives_back_the_colour_field(quads):
    """Each texel is coloured at its quad's bilinear point: looking the texture up at a random point's
    bilinear UV gives the field's colour there."""
    atlas = quad_atlas(len(quads.quads), 256)
    assert atlas.cell >= 8 and atlas.uvs.min() > 0 and atlas.uvs.max() < 1
    texture = bake_quads(quads, atlas, position_colour)
    rng = np.random.default_rng(0)
    face = rng.integers(0, len(quads.quads), 3000)
    s, t = rng.random(3000), rng.random(3000)
    corners_uv = atlas.uvs[face]
    uv = quad_points(np.concatenate([corners_uv, np.zeros((3000, 4, 1))], -1), s, t)[:, :2]
    looked_up = sample_texture(texture, uv) / 255.0
    expected = position_colour(quad_points(quads.vertices[quads.quads[face]], s, t))
    error = np.abs(looked_up - expected)
    assert np.median(error) < 0.01 and np.percentile(error, 99) < 0.04, (np.median(error), error.max())


def test_cells_do_not_overlap():
    atlas = quad_atlas(10, 64)
    pixels = atlas.uvs * atlas.size
    boxes = [(p[:, 0].min(), p[:, 0].max(), p[:, 1].min(), p[:, 1].max()) for p in pixels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[1] < b[0] or b[1] < a[0] or a[3] < b[2] or b[3] < a[2]


def test_obj_keeps_quads_and_texture_coordinates(quads, tmp_path):
    atlas = quad_atlas(len(quads.quads), 128)
    written = write_quad_obj(quads, tmp_path / "mesh_quad.obj", atlas, bake_quads(quads, atlas, position_colour))
    assert [p.name for p in written] == ["mesh_quad.obj", "mesh_quad.mtl", "mesh_quad_albedo.png"]
    vertices, polygons = read_obj_polygons(tmp_path / "mesh_quad.obj")
    assert all(len(p) == 4 for p in polygons) and len(polygons) == len(quads.quads)
    text = (tmp_path / "mesh_quad.obj").read_text()
    assert text.count("\nvt ") == 4 * len(quads.quads) and "mtllib mesh_quad.mtl" in text
    loaded = trimesh.load(tmp_path / "mesh_quad.obj", force="mesh")  # other tools read it (triangulated)
    assert len(loaded.faces) == 2 * len(quads.quads)


def test_mesh_stage_writes_the_quad_obj(tmp_path):
    from helpers.scenes import mesh_untrained_field

    out, info = mesh_untrained_field(tmp_path, ["mesh.resolution=48", "mesh.target_faces=400",
                                                "mesh.texture_size=64", "mesh.remesh=quad", "mesh.preview=false"])
    assert "mesh_quad.obj" in info["files"] and 200 <= info["quad_faces"] <= 800
    _, polygons = read_obj_polygons(out / "mesh_quad.obj")
    assert {len(p) for p in polygons} == {4}
    assert (out / "mesh_quad_albedo.png").is_file() and info["quad_texture_size"] >= 64
    assert "mesh.glb" in info["files"]  # the triangle GLB is still written
