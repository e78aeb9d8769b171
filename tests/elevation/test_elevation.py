"""Elevation: the geometric estimate on real GSO geometry, fallbacks, the stage's plumbing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from img2mesh.app import load_config
from img2mesh.console import ConsoleReporter
from img2mesh.elevation.estimate import MIN_MATCHES, estimate_elevation, rig_cameras
from img2mesh.elevation.matching import sift_matches
from img2mesh.elevation.stage import STAGE as ELEVATION
from img2mesh.pipeline.runner import Runner
from img2mesh.utils.raster import rasterize

from helpers.data import CHICKEN, GSO

TRAINED = (-10.0, 40.0)
SEARCH = (-20.0, 60.0)


def textured_renders(mesh: trimesh.Trimesh, elevation: float, size: int = 256):
    """The four relative views around an input at ``elevation``, rendered with our rasteriser.

    The GSO meshes ship without their texture images, so the surface gets a procedural texture
    (sines of the world position): features that stick to the geometry, as a real texture would.
    """
    views, masks = [], []
    for K, pose in rig_cameras(elevation, size):
        raster = rasterize(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces),
                           torch.tensor(K, dtype=torch.float32), torch.tensor(pose, dtype=torch.float32), size, size)
        covered = raster.mask.numpy()
        points = (np.asarray(mesh.triangles)[raster.face.numpy()[covered]] * raster.bary.numpy()[covered][..., None]).sum(1)
        texture = 0.5 + 0.5 * np.stack([np.sin(points[:, 0] * 40 + np.cos(points[:, 1] * 23)),
                                        np.sin(points[:, 1] * 37 + points[:, 2] * 19),
                                        np.sin(points[:, 2] * 43 + np.sin(points[:, 0] * 29))], 1)
        image = np.full((size, size, 3), 255, np.uint8)
        image[covered] = (texture * 255).astype(np.uint8)
        views.append(image)
        masks.append(covered)
    return views, masks


def gso_mesh(name: str) -> trimesh.Trimesh:
    from img2mesh.evaluation.gso import normalise_ground_truth

    path = GSO / name / "model.obj"
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared/gso)")
    return normalise_ground_truth(trimesh.load(path, force="mesh"), 0.0)


@pytest.mark.parametrize("name", ["chicken", "teapot"])
@pytest.mark.parametrize("elevation", [0.0, 15.0, 30.0])
def test_sift_recovers_known_elevations(name, elevation):
    views, masks = textured_renders(gso_mesh(name), elevation)
    estimate = estimate_elevation(views, masks, sift_matches, SEARCH, 30.0, TRAINED)
    assert estimate.fallback_reason is None and not estimate.clamped
    assert abs(estimate.elevation_deg - elevation) <= 5.0, (name, elevation, estimate.elevation_deg)
    assert min(estimate.curve, key=estimate.curve.get) == estimate.elevation_deg
    assert sum(estimate.match_counts.values()) >= MIN_MATCHES


def test_estimate_above_the_trained_range_is_clamped():
    views, masks = textured_renders(gso_mesh("chicken"), 52.0)
    estimate = estimate_elevation(views, masks, sift_matches, SEARCH, 30.0, TRAINED)
    assert estimate.clamped and estimate.elevation_deg == TRAINED[1]
    assert abs(min(estimate.curve, key=estimate.curve.get) - 52.0) <= 5.0


def test_too_few_matches_fall_back_to_the_default():
    blank = [np.full((64, 64, 3), 255, np.uint8)] * 4
    masks = [np.ones((64, 64), bool)] * 4
    estimate = estimate_elevation(blank, masks, sift_matches, SEARCH, 25.0, TRAINED)
    assert estimate.elevation_deg == 25.0 and "too few matches" in estimate.fallback_reason


def run(recorder, image, out, *overrides):
    stages = [recorder.stage("segment"), ELEVATION]
    return Runner(stages, load_config(overrides=list(overrides)), "cpu", ConsoleReporter(quiet=True)).run(image, out)


def test_given_elevation_is_written_and_recorded(recorder, image, tmp_path):
    out = tmp_path / "out"
    result = run(recorder, image, out, "elevation.value=20")
    assert result.ok, result.error
    assert json.loads((out / "elevation" / "elevation.json").read_text()) == {"elevation_deg": 20.0, "source": "user"}
    assert not (out / "elevation" / "view_0.png").exists()  # --elevation skips the estimate
    assert json.loads((out / "img2mesh.json").read_text())["stages"]["elevation"]["info"]["elevation_deg"] == 20.0


def test_elevation_outside_the_clamp_range_warns(recorder, image, tmp_path):
    out = tmp_path / "out"
    assert run(recorder, image, out, "elevation.value=70").ok
    assert "outside the range estimates are clamped to [-10, 40]" in (out / "img2mesh.log").read_text()


def test_estimate_in_the_pipeline_with_the_tiny_model(tmp_path):
    """Untrained weights give noise views: this checks the plumbing and the fallback, not accuracy."""
    from typer.testing import CliRunner

    from img2mesh.cli import app

    image = CHICKEN
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(image), "-o", str(out), "--until", "elevation", "--device", "cpu",
                                      "-q", "--set", "generate.model=tiny", "--set", "generate.random_weights=true",
                                      "--set", "generate.steps=2", "--set", "elevation.matcher=sift"])
    assert result.exit_code == 0, result.output
    folder = out / "elevation"
    record = json.loads((folder / "elevation.json").read_text())
    assert record["source"] == "default" and record["elevation_deg"] == 30.0
    assert "too few matches" in record["fallback_reason"] and len(record["match_counts"]) == 6
    assert all((folder / f"view_{k}.png").is_file() for k in range(4)) and (folder / "error_curve.png").is_file()
    assert "using the default 30 deg" in (out / "img2mesh.log").read_text()


def test_loftr_offline_says_what_to_do(monkeypatch):
    import kornia.feature

    from img2mesh.app import get_weight
    from img2mesh.errors import WeightsError

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(kornia.feature, "LoFTR", offline)
    with pytest.raises(WeightsError) as info:
        get_weight("loftr").load("cpu")  # the registry's entry: the name the message tells to download
    message = str(info.value)
    assert "loftr_indoor_ds_new.ckpt" in message and "img2mesh weights download loftr`" in message
    assert "elevation.matcher=sift" in message


def test_real_loftr_matches_at_480_in_the_views_pixels():
    """kornia's LoFTR itself (untrained weights: the code path, not the matches) sees both views as
    480² grey images, as One-2-3-45 does, and its keypoints come back in the 256² views' pixels."""
    from kornia.feature import LoFTR

    from img2mesh.elevation.matching import loftr_matches

    torch.manual_seed(0)
    network = LoFTR(pretrained=None).eval()
    network.coarse_matching.thr = 0.0  # untrained confidences are tiny: keep every mutual match
    seen, raw = [], []
    network.register_forward_pre_hook(lambda module, args: seen.append({k: v.shape for k, v in args[0].items()}))
    network.register_forward_hook(lambda module, args, out: raw.append(out["keypoints0"].numpy().copy()))
    rng = np.random.default_rng(0)
    view = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    everywhere = np.ones((256, 256), bool)
    matches = loftr_matches(view, view[:, ::-1].copy(), everywhere, everywhere, network, "cpu", size=480)
    assert seen == [{"image0": (1, 1, 480, 480), "image1": (1, 1, 480, 480)}]
    assert len(matches.points_a) == len(matches.points_b) == len(matches.confidence) > 0
    # pixel centres onto pixel centres: back in the 256² views' pixels, not the 480² grid's
    assert np.allclose(matches.points_a, (raw[0] + 0.5) * 256 / 480 - 0.5)
    assert matches.points_a.max() < 256 and matches.points_b.max() < 256
