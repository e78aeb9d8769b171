import json

from img2mesh.elevation.stage import STAGE as ELEVATION
from img2mesh.pipeline.config import load_config
from img2mesh.pipeline.reporting import Reporter
from img2mesh.pipeline.runner import Runner


def run(recorder, image, out, *overrides):
    stages = [recorder.stage("segment"), ELEVATION]
    return Runner(stages, load_config(overrides=list(overrides)), Reporter(quiet=True), "cpu").run(image, out)


def test_given_elevation_is_written_and_recorded(recorder, image, tmp_path):
    out = tmp_path / "out"
    result = run(recorder, image, out, "elevation.value=20")
    assert result.ok, result.error
    assert json.loads((out / "elevation" / "elevation.json").read_text()) == {"elevation_deg": 20.0, "source": "user"}
    assert json.loads((out / "img2mesh.json").read_text())["stages"]["elevation"]["info"]["elevation_deg"] == 20.0


def test_elevation_outside_trained_range_warns(recorder, image, tmp_path):
    out = tmp_path / "out"
    assert run(recorder, image, out, "elevation.value=70").ok
    assert "outside SyncDreamer's trained range" in (out / "img2mesh.log").read_text()


def test_estimation_is_not_faked(recorder, image, tmp_path):
    result = run(recorder, image, tmp_path / "out")
    assert not result.ok
    assert "is not implemented yet" in result.error and "--elevation" in result.error
