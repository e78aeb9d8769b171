"""Choosing among generated sample sets: the consistency score, the contact sheet, --select."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image
from typer.testing import CliRunner

from img2mesh.cli import app
from img2mesh.generate.scoring import consistency, contact_sheet, score_samples
from img2mesh.utils import cameras
from img2mesh.utils.images import composite_on_white

from helpers.data import GSO
from helpers.scenes import BOUND, box_mesh, render_views
from helpers.stages import snapshot


def gso_views(name: str) -> np.ndarray:
    """The 16 ground-truth views of a shared GSO object, uint8 on white."""
    folder = GSO / name
    if not (folder / "000.png").is_file():
        pytest.skip(f"{folder} not found (../shared/gso)")
    return np.stack([(composite_on_white(Image.open(folder / f"{i:03d}.png")) * 255).round().astype(np.uint8)
                     for i in range(16)])


@pytest.mark.parametrize("name, other", [("chicken", "lion"), ("school_bus2", "teapot"), ("sofa", "bell")])
def test_consistency_ranks_true_views_above_mixed_and_shuffled_ones(name, other):
    """Renders of one object explain each other's silhouettes; replacing three views by another
    object's, or shuffling which camera each view belongs to, must lower the score."""
    views, foreign = gso_views(name), gso_views(other)
    poses, Ks = cameras.target_poses(), np.repeat(cameras.intrinsics(256)[None], 16, 0)
    true = consistency(views, Ks, poses, BOUND).mean()
    mixed = views.copy()
    mixed[[3, 9, 12]] = foreign[[3, 9, 12]]
    shuffled = views[np.random.default_rng(0).permutation(16)]
    assert true > 0.9, true
    assert true > consistency(mixed, Ks, poses, BOUND).mean() + 0.1
    assert true > consistency(shuffled, Ks, poses, BOUND).mean() + 0.02


def test_views_of_pure_noise_are_not_consistent():
    """Noise fills every frame with 'foreground': its hull explains its silhouettes (0.92 before the
    border term), yet it shows no object; a real object's views keep their score."""
    poses, Ks = cameras.target_poses(), np.repeat(cameras.intrinsics(256)[None], 16, 0)
    noise = np.random.default_rng(0).integers(0, 256, (16, 256, 256, 3), dtype=np.uint8)
    assert consistency(noise, Ks, poses, BOUND).mean() < 0.1
    assert consistency(gso_views("chicken"), Ks, poses, BOUND).mean() > 0.9


def test_input_agreement_prefers_the_set_whose_front_view_matches_the_input():
    views, other = gso_views("chicken"), gso_views("teapot")
    poses, Ks = cameras.target_poses(), np.repeat(cameras.intrinsics(256)[None], 16, 0)
    rgba = np.asarray(Image.open(GSO / "chicken" / "000.png"))
    scores = score_samples(np.stack([other, views]), Ks, poses, composite_on_white(Image.fromarray(rgba)),
                           rgba[..., 3] > 127, cameras.look_at_pose(0.0, np.radians(30)), BOUND)
    assert scores[0].nearest_view == 0 and scores[1].input_agreement > 0.95
    assert scores[1].input_agreement > scores[0].input_agreement + 0.1 and scores[1].score > scores[0].score
    sheet = contact_sheet(np.stack([other, views]), scores, tile=40)
    assert sheet.shape == (2 * (80 + 18), 8 * 40, 3)


# ---- selection modes through the runner, on views we render ourselves --------------------------------

SIZE = 48


def _views_array(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"{i:02d}.png").convert("RGB")) for i in range(16)])


def fake_segment(ctx):
    """An input image of the box from the input camera (azimuth 0, elevation 30): view 0."""
    folder = render_views(box_mesh(), ctx.out_dir / "views", size=SIZE, padding=2)
    Image.open(folder / "00.png").save(ctx.out_dir / "input_rgba.png")


def fake_generate(ctx):
    """Sample 0: views of the box; sample 1: the same with four views of a sphere (inconsistent)."""
    from img2mesh.generate.stage import score_sets
    from img2mesh.utils.files import atomic_write_json

    good = render_views(box_mesh(), ctx.out_dir / "sample_0", size=SIZE, alpha=False, padding=2)
    sphere = render_views(trimesh.creation.icosphere(subdivisions=3, radius=0.3), ctx.out_dir / "sphere",
                          size=SIZE, alpha=False, padding=2)
    bad = ctx.out_dir / "sample_1"
    bad.mkdir()
    for i in range(16):
        source = sphere if i in (2, 6, 10, 14) else good
        (bad / f"{i:02d}.png").write_bytes((source / f"{i:02d}.png").read_bytes())
    record = cameras.cameras_record(cameras.target_poses(), cameras.intrinsics(SIZE), 30.0)
    atomic_write_json(ctx.out_dir / "cameras.json", record)
    scores = score_sets(ctx, np.stack([_views_array(good), _views_array(bad)]), record)
    return {"best_sample": int(np.argmax([s.score for s in scores]))}


def run_selection(tmp_path: Path, select, out: Path):
    from img2mesh.app import load_config
    from img2mesh.console import ConsoleReporter
    from img2mesh.enhance.stage import STAGE as ENHANCE
    from img2mesh.mesh.stage import FOLDER_STAGE as MESH
    from img2mesh.pipeline.contract import Stage
    from img2mesh.pipeline.runner import Runner
    from img2mesh.reconstruct.stage import STAGE as RECONSTRUCT

    stages = [Stage("segment", "", (), ("input_rgba.png",), (), run=fake_segment),
              Stage("generate", "", ("segment",), ("scores.json",), (), run=fake_generate),
              ENHANCE, RECONSTRUCT, MESH]  # enhance switched off, as by default
    image = tmp_path / "in.png"
    if not image.exists():
        Image.new("RGB", (8, 8)).save(image)
    config = load_config("smoke", overrides=[
        "reconstruct.steps=8", "reconstruct.rays_per_step=64", "reconstruct.image_size=0",
        "mesh.resolution=32", "mesh.texture_size=32", f"reconstruct.select={select}", "generate.num_samples=2"])
    result = Runner(stages, config, "cpu", ConsoleReporter(quiet=True)).run(image, out)
    assert result.ok, result.error
    return json.loads((out / "img2mesh.json").read_text())["stages"]


def test_select_auto_k_and_all_write_what_they_say(tmp_path):
    out = tmp_path / "out"
    stages = run_selection(tmp_path, "auto", out)
    scores = json.loads((out / "generate" / "scores.json").read_text())
    assert scores["best_sample"] == 0 and scores["samples"][0]["score"] > scores["samples"][1]["score"]
    assert (out / "generate" / "samples.png").is_file()
    assert stages["reconstruct"]["info"]["sample"] == 0 and stages["reconstruct"]["info"]["select"] == "auto"
    assert (out / "mesh.glb").is_file() and not (out / "sample_0").exists()

    stages = run_selection(tmp_path, 1, out)  # only reconstruct and mesh re-run
    assert stages["reconstruct"]["info"]["sample"] == 1 and (out / "mesh.glb").is_file()

    stages = run_selection(tmp_path, "all", out)
    assert stages["reconstruct"]["info"]["samples"] == [0, 1]
    for k in (0, 1):
        assert (out / "reconstruct" / f"sample_{k}" / "field.safetensors").is_file()
        assert trimesh.load(out / f"sample_{k}" / "mesh.glb", force="mesh").visual.kind == "texture"
    assert not (out / "mesh.glb").exists()  # no single result any more: each set has its own folder
    # one shape of per-set facts for every stage (generate/sets.py)
    assert set(stages["mesh"]["info"]["per_sample"]) == set(stages["reconstruct"]["info"]["per_sample"]) \
        == {"sample_0", "sample_1"}


def test_select_beyond_the_sample_count_is_refused_before_anything_is_written(tmp_path):
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16), "red").save(image)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(image), "-o", str(out), "--num-samples", "2", "--select", "2"])
    assert result.exit_code == 2 and "--select 2: there are only 2 sample set(s)" in result.stderr
    beyond_auto = CliRunner().invoke(app, ["run", str(image), "-o", str(out), "--select", "4"])  # num_samples auto
    assert beyond_auto.exit_code == 2 and "--num-samples auto makes at most 4 sample sets" in beyond_auto.stderr
    bad = CliRunner().invoke(app, ["run", str(image), "-o", str(out), "--select", "best"])
    assert bad.exit_code == 2 and "reconstruct.select" in bad.stderr
    assert snapshot(out) == {}
