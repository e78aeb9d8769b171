"""The HTML report and batch index: what they link, that they work from disk, and a real browser's view."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from img2mesh import app as stages_module
from img2mesh.app import default_stages
from img2mesh.cli import app
from img2mesh.report.page import FILES_DIR, VENDOR, VIEWER_SCRIPT, write_report

from helpers.browser import open_report, why_no_browser
from helpers.data import ROOT
from helpers.images import write_rgba
from helpers.scenes import mesh_untrained_field

SCREENSHOTS = ROOT / "test-artifacts"  # kept for a person to look at (git-ignored)


def _image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder with the real mesh stage's outputs (textured GLB, previews) and the files the
    earlier stages leave: input, cut-out, elevation curve, two sample sets with scores."""
    out, _ = mesh_untrained_field(tmp_path_factory.mktemp("report"),
                                  ["mesh.resolution=48", "mesh.target_faces=2000", "mesh.texture_size=128"])
    _image(out / "segment" / "input.png", (200, 120, 40))
    Image.new("RGBA", (64, 64), (200, 120, 40, 128)).save(out / "segment" / "rgba.png")
    _image(out / "elevation" / "error_curve.png", (255, 255, 255))
    (out / "elevation" / "elevation.json").write_text(json.dumps({"elevation_deg": 25.0, "source": "estimated"}))
    for k in (0, 1):
        _image(out / "generate" / f"sample_{k}" / "strip.png", (40 * k, 90, 160), (1024, 64))
    (out / "generate" / "scores.json").write_text(json.dumps(
        {"best_sample": 1, "samples": [{"sample": 0, "score": 0.41}, {"sample": 1, "score": 0.77}]}))
    manifest = json.loads((out / "img2mesh.json").read_text())
    manifest["stages"]["reconstruct"]["info"] = {"sample": 1, "select": "auto"}
    (out / "img2mesh.json").write_text(json.dumps(manifest))
    write_report(out, default_stages())
    return out


def _links(page: str) -> list[str]:
    return re.findall(r"(?:src|href)='([^']+)'", page)


def test_report_links_only_relative_files_that_exist(run_dir):
    page = (run_dir / "report.html").read_text()
    links = _links(page)
    assert "segment/input.png" in links and "segment/rgba.png" in links and "elevation/error_curve.png" in links
    assert "generate/sample_0/strip.png" in links and "mesh/turntable.mp4" in links or "mesh/turntable.gif" in links
    for link in links:
        assert not link.startswith(("/", "http:", "https:", "file:")), link
        assert (run_dir / link).is_file(), link
    assert "http://" not in page and "https://" not in page  # nothing to fetch from the network
    assert "sample_1: score 0.770, <span class='ok'>reconstructed</span>" in page
    assert "sample_0: score 0.410, <span class='muted'>not reconstructed</span>" in page
    assert "25.0° (estimated)" in page and "<td>mesh</td>" in page


def test_report_carries_the_glb_and_the_vendored_viewer(run_dir):
    files = run_dir / FILES_DIR
    assert (files / VIEWER_SCRIPT).read_bytes() == (VENDOR / VIEWER_SCRIPT).read_bytes()
    models = (files / "models.js").read_text()
    encoded = re.search(r'"mesh.glb": "([^"]+)"', models).group(1)  # the published mesh, OUT/mesh.glb
    assert base64.b64decode(encoded) == (run_dir / "mesh.glb").read_bytes() == (run_dir / "mesh" / "mesh.glb").read_bytes()
    assert "data-model='mesh.glb'" in (run_dir / "report.html").read_text()


def test_report_of_a_copied_folder_still_works(run_dir, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(run_dir, copy)
    for link in _links((copy / "report.html").read_text()):
        assert (copy / link).is_file(), link


@pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))
def test_report_in_headless_chromium(run_dir):
    """The page opened from disk: the 3D view fires model-viewer's load event for the GLB, every
    image loads, and the screenshot shows the model (kept in test-artifacts/ to look at)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "report.png"
    state = open_report(run_dir / "report.html", shot)
    assert state["report"] == {"expected": 1, "loaded": 1, "errors": []}, state["console"]
    assert state["images"] and all(i["ok"] for i in state["images"]), state["images"]
    assert not [line for line in state["console"] if line.startswith("pageerror")], state["console"]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] > 900 and (pixels.std(axis=(0, 1)) > 10).all()


def test_cli_writes_a_report_per_input_and_an_index_per_batch(monkeypatch, recorder, tmp_path):
    monkeypatch.setattr(stages_module, "default_stages", recorder.chain)
    folder = tmp_path / "photos"
    write_rgba(folder / "one.png")
    write_rgba(folder / "two.png", seed=3)
    (folder / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(folder), "-o", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 1
    for name in ("one", "two"):
        page = (out / name / "report.html").read_text()
        assert "<td>a</td>" in page and "<td>c</td>" in page  # the stage timings
    index = (out / "index.html").read_text()
    assert "href='one/report.html'" in index and "href='two/report.html'" in index
    assert "bad.png" in index and "failed: " in index and "not an image" in index
    assert "2 of 3 inputs succeeded" in index
    for link in _links(index):
        assert (out / link).is_file(), link


def test_a_refused_input_leaves_the_other_inputs_report_alone(monkeypatch, recorder, image, tmp_path):
    monkeypatch.setattr(stages_module, "default_stages", recorder.chain)
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["run", str(image), "-o", str(out), "--device", "cpu", "-q"]).exit_code == 0
    before = (out / "report.html").read_bytes()
    other = write_rgba(tmp_path / "other.png", seed=5)
    refused = CliRunner().invoke(app, ["run", str(other), "-o", str(out), "--device", "cpu", "-q"])
    assert refused.exit_code == 2 and "holds the results of another input" in refused.stderr
    assert (out / "report.html").read_bytes() == before


def test_stage_warnings_reach_the_report(monkeypatch, recorder, image, tmp_path):
    import logging

    def warn(ctx) -> None:
        logging.getLogger("img2mesh").warning("b: masks from the white-background threshold")

    monkeypatch.setattr(stages_module, "default_stages",
                        lambda *a, **k: [recorder.stage("a"), recorder.stage("b", reads=("a",), body=warn)])
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["run", str(image), "-o", str(out), "--device", "cpu", "-q"]).exit_code == 0
    page = (out / "report.html").read_text()
    assert "Warnings" in page and "b: masks from the white-background threshold" in page
