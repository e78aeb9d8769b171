"""The command line: help, commands, exit codes, one-line errors, batch mode, OUT/ left intact."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from img2mesh import __version__
from img2mesh import app as stages_module
from img2mesh.cli import app
from img2mesh.errors import StageError

from helpers.images import write_rgba
from helpers.stages import Recorder, snapshot

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def fake_stages(monkeypatch, recorder: Recorder) -> Recorder:
    """Replace the real stages by quick test stages for this test's CLI calls."""
    monkeypatch.setattr(stages_module, "default_stages", recorder.chain)
    return recorder


def assert_one_line_error(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), result.stderr
    assert text in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_version_and_help():
    assert invoke("--version").stdout.strip() == f"img2mesh {__version__}"
    help_text = invoke("--help").stdout
    for command in ("run", "stages", "doctor", "weights"):
        assert command in help_text
    run_help = invoke("run", "--help").stdout
    for option in ("--preset", "--config", "--set", "--seed", "--device", "--from", "--until", "--force",
                   "--elevation", "--num-samples", "--format", "--quiet", "--verbose", "--checkpoint"):
        assert option in run_help


def test_help_names_every_registered_stage_in_order():
    # the summary line is built from app.STAGE_MODULES, so a new stage appears without touching the CLI
    summary = " ".join(invoke("--help").stdout.split())
    names = [stage.name for stage in stages_module.registered_stages()]
    assert " -> ".join(names) in summary
    assert "refine" in names


def test_stages_lists_the_pipeline_in_order():
    text = invoke("stages").stdout
    positions = [text.index(f"│ {name} ") for name in ("segment", "elevation", "generate", "reconstruct", "mesh")]
    assert positions == sorted(positions)
    assert "elevation.json" in text


def test_doctor_reports_environment():
    result = invoke("doctor")
    assert result.exit_code == 0
    for needle in ("python", "torch", "tinycudann", "nerfacc", "hash-grid encoding", "weights: syncdreamer",
                   "ray (for --ray)"):
        assert needle in result.stdout


def test_cli_import_is_light():
    code = "import sys, img2mesh.cli; sys.exit(int(any(m in sys.modules for m in ('torch', 'yaml', 'PIL'))))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "img2mesh", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250", **env}, timeout=120)


def test_weights_offline_errors_say_what_to_download(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    listing = run_cli(["weights", "list"], env)
    assert listing.returncode == 0
    assert "liuyuan-pal/SyncDreamer" in listing.stdout and "camenduru/SyncDreamer" in listing.stdout
    assert str(tmp_path / "hf") in " ".join(listing.stdout.split()) or "hf/hub" in listing.stdout
    path = run_cli(["weights", "path", "syncdreamer"], env)
    assert path.returncode == 1 and "img2mesh weights download syncdreamer" in path.stderr
    download = run_cli(["weights", "download", "syncdreamer"], env)
    assert download.returncode == 1
    message = " ".join(download.stderr.split())
    assert "syncdreamer-pretrain.ckpt" in message and "HF_HUB_OFFLINE is set" in message
    assert "img2mesh weights download syncdreamer" in message and "--checkpoint" in message
    assert "Traceback" not in download.stderr
    unknown = run_cli(["weights", "path", "nope"], env)
    assert unknown.returncode == 2 and "unknown weights" in unknown.stderr


def test_weights_path_finds_a_cached_file(tmp_path):
    hub = tmp_path / "hf" / "hub" / "models--camenduru--SyncDreamer"
    (hub / "refs").mkdir(parents=True)
    (hub / "refs" / "main").write_text("abc123")
    blob = hub / "snapshots" / "abc123" / "syncdreamer-pretrain.ckpt"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    result = run_cli(["weights", "path", "syncdreamer"], {"HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(blob)


def test_single_input_writes_into_out(fake_stages, image, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", image, "-o", out, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert (out / "img2mesh.json").is_file() and (out / "c" / "out.txt").is_file()
    assert (out / "out.txt").is_file()  # published
    for column in ("stage", "status", "time", "output"):
        assert column in result.stdout
    again = invoke("run", image, "-o", out, "--device", "cpu")
    assert again.exit_code == 0 and "skipped" in again.stdout
    assert fake_stages.calls == ["a", "b", "c"]


def test_flags_reach_the_config(fake_stages, image, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", image, "-o", out, "--device", "cpu", "--set", "generate.steps=5",
                    "--set", "mesh.resolution=32", "--preset", "smoke", "-q")
    assert result.exit_code == 0, result.output
    assert (out / "c" / "out.txt").read_text() == "a(200);b(5);c(32);"


def test_batch_goes_on_past_a_failing_input(fake_stages, tmp_path):
    folder = tmp_path / "photos"
    write_rgba(folder / "a.png")
    (folder / "b.png").write_bytes(b"this is not a png")
    write_rgba(folder / "c.jpg".replace(".jpg", ".png"), seed=2)
    out = tmp_path / "out"
    result = invoke("run", folder, "-o", out, "--device", "cpu", "-q")
    assert result.exit_code == 1
    assert (out / "a" / "c" / "out.txt").is_file() and (out / "c" / "c" / "out.txt").is_file()
    assert not (out / "b").exists()
    assert "2 of 3 inputs succeeded" in result.stdout
    assert "not an image" in " ".join(result.stdout.split())
    assert result.stderr.splitlines()[-1].startswith("error: b.png: ")


def test_batch_resolves_stem_collisions_in_input_order(fake_stages, tmp_path):
    first = write_rgba(tmp_path / "x" / "cat.png")
    second = write_rgba(tmp_path / "y" / "cat.png", seed=4)
    out = tmp_path / "out"
    result = invoke("run", first, second, "-o", out, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    assert (out / "cat" / "img2mesh.json").is_file() and (out / "cat-2" / "img2mesh.json").is_file()
    import json

    assert json.loads((out / "cat-2" / "img2mesh.json").read_text())["input"]["path"] == str(second.resolve())


def test_real_pipeline_runs_end_to_end_with_tiny_models(image, tmp_path):
    out = tmp_path / "out"
    tiny = ["--preset", "smoke", "--set", "generate.model=tiny", "--set", "generate.random_weights=true",
            "--set", "generate.steps=1", "--set", "generate.guidance=cfg", "--set", "generate.cfg_scale=1",
            "--set", "elevation.matcher=sift", "--set", "reconstruct.steps=20",
            "--set", "reconstruct.rays_per_step=128", "--set", "reconstruct.image_size=64",
            "--set", "mesh.resolution=48"]
    result = invoke("run", image, "-o", out, "--device", "cpu", "-q", *tiny)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "img2mesh.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("segment", "elevation", "generate", "reconstruct", "mesh")] \
        == ["done"] * 5
    assert manifest["stages"]["elevation"]["info"]["source"] == "default"  # noise views: too few matches
    assert (out / "mesh.glb").is_file() and (out / "generate" / "sample_0" / "15.png").is_file()
    report = (out / "report.html").read_text()  # the page an artist opens, written after the run
    for link in ("mesh/mesh.glb", "segment/rgba.png", "generate/sample_0/grid.png", "report_files/models.js"):
        assert f"'{link}'" in report and (out / link).is_file(), link
    # the photo was registered to the mesh, and projected only if the two silhouettes agree
    mesh_info = manifest["stages"]["mesh"]["info"]
    assert mesh_info["photo_iou_after"] >= mesh_info["photo_iou_before"]
    assert mesh_info["photo_projected"] == (mesh_info["photo_iou_after"] >= 0.7)
    assert (out / "mesh" / "photo_camera.json").is_file() and (out / "mesh" / "photo_compare.png").is_file()
    # random weights are flagged wherever a result is read: manifest, report, log (and --json, below)
    assert manifest["random_weights"] == ["generate"]
    assert "id='random-weights'" in report and "this mesh is noise" in report
    assert "random weights (generate)" in (out / "img2mesh.log").read_text()
    again = invoke("run", image, "-o", out, "--device", "cpu", "-q", "--elevation", "20", "--json", *tiny)
    assert again.exit_code == 0 and json.loads(again.stdout)["inputs"][0]["random_weights"] == ["generate"]
    stages = json.loads((out / "img2mesh.json").read_text())["stages"]
    assert stages["segment"]["status"] == "done" and stages["elevation"]["info"]["source"] == "user"


@pytest.fixture
def occupied(tmp_path) -> Path:
    """An OUT/ that already holds someone's results, to check errors leave it as it was."""
    out = tmp_path / "out"
    (out / "mesh").mkdir(parents=True)
    (out / "mesh" / "mesh.glb").write_bytes(b"precious")
    (out / "img2mesh.json").write_text("{}")
    return out


def bad_input_cases(tmp_path: Path, image: Path, out: Path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(image.read_bytes()[:-30])
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "notes.txt").write_text("no images here")
    a_file = tmp_path / "file-not-folder"
    a_file.write_text("x")
    not_yaml = tmp_path / "bad.yaml"
    not_yaml.write_text("generate: [unclosed")
    return [
        ([tmp_path / "missing.png", "-o", out], 2, "does not exist"),
        ([corrupt, "-o", out], 1, "unreadable or corrupt"),
        ([truncated, "-o", out], 1, "unreadable or corrupt"),
        ([empty_dir, "-o", out], 2, "holds no images"),
        ([image, "-o", a_file], 2, "is not a folder"),
        ([image, "-o", out, "--from", "paint"], 2, "--from paint: unknown stage"),
        ([image, "-o", out, "--until", "paint"], 2, "--until paint: unknown stage"),
        ([image, "-o", out, "--set", "generate.nope=1"], 2, "unknown config key generate.nope"),
        ([image, "-o", out, "--set", "generate.steps=lots"], 2, "generate.steps: expected int"),
        ([image, "-o", out, "--set", "justakey"], 2, "KEY=VALUE"),
        ([image, "-o", out, "--config", not_yaml], 2, "is not valid YAML"),
        ([image, image, "-o", out], 2, "is given twice"),
        ([image, "-o", out, "--format", "glb,fbx"], 2, "mesh.formats[1]"),
        ([image, "-o", out, "--preset", "turbo"], 2, "unknown preset"),
        ([image, "-o", out, "--set", "run.device=tpu"], 2, "run.device"),
    ]


def test_a_missing_checkpoint_is_refused_before_any_stage_runs(tmp_path, image, occupied):
    """The real stages: generate's (and elevation's) config check sees the file is missing."""
    before = snapshot(occupied)
    result = invoke("run", image, "-o", occupied, "--checkpoint", tmp_path / "nope.ckpt", "--device", "cpu")
    assert_one_line_error(result, 2, f"checkpoint file {tmp_path / 'nope.ckpt'} does not exist")
    assert snapshot(occupied) == before
    legacy = invoke("run", image, "-o", occupied, "--weights", tmp_path / "nope.ckpt", "--device", "cpu")
    assert_one_line_error(legacy, 2, "does not exist")  # the old name of the option still works


def test_what_is_knowable_before_the_first_stage_is_checked_there(tmp_path, image, occupied):
    """The real stages' checks: a sample set the CPU will not make, a seed no generator takes, a text
    file as the checkpoint (refused without a word about unpickling it)."""
    text_file = tmp_path / "notes.ckpt"
    text_file.write_text("these are my notes, not a checkpoint")
    cases = [
        (["--select", "2", "--device", "cpu"], "on the CPU --num-samples auto makes one sample set"),
        (["--seed", str(2 ** 64), "--device", "cpu"], "run.seed: must be at most"),
        (["--seed", "-1", "--device", "cpu"], "run.seed: must be at least 0"),
        (["--checkpoint", text_file, "--device", "cpu"], "is not a checkpoint"),
    ]
    for args, text in cases:
        before = snapshot(occupied, with_log=True)
        result = invoke("run", image, "-o", occupied, *args)
        assert_one_line_error(result, 2, text)
        assert "trust" not in result.stderr
        assert snapshot(occupied, with_log=True) == before, args
        document = json.loads(invoke("run", image, "-o", occupied, "--json", *args).stdout)  # valid --json too
        assert document["exit_code"] == 2 and document["inputs"] == [] and text in document["error"]


def test_bad_inputs_get_one_line_and_leave_out_intact(fake_stages, tmp_path, image, occupied):
    for args, code, text in bad_input_cases(tmp_path, image, occupied):
        before = snapshot(occupied)
        result = invoke("run", *args)
        assert_one_line_error(result, code, text)
        assert snapshot(occupied) == before, args
    assert fake_stages.calls == []


def test_cuda_request_without_cuda_is_a_usage_error(fake_stages, image, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke("run", image, "-o", tmp_path / "out", "--device", "cuda")
    assert_one_line_error(result, 2, "--device cuda")
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_refused(fake_stages, image, tmp_path, monkeypatch):
    locked = tmp_path / "ro"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr("img2mesh.pipeline.inputs.os.access",
                        lambda path, mode: False if mode & os.W_OK else real_access(path, mode))
    result = invoke("run", image, "-o", locked / "out", "--device", "cpu")
    assert_one_line_error(result, 2, "no write permission")
    assert not (locked / "out").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_out_is_refused_for_real(fake_stages, image, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    result = invoke("run", image, "-o", locked / "out", "--device", "cpu")
    assert_one_line_error(result, 2, "no write permission")


def test_verbose_shows_the_trace(image, tmp_path):
    result = invoke("run", image, "-o", tmp_path / "out", "--set", "x=1", "--verbose")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "unknown config key x" in result.stderr


def test_ctrl_c_exits_130_and_resumes(monkeypatch, recorder, image, tmp_path):
    recorder.fail["b"] = KeyboardInterrupt()
    monkeypatch.setattr(stages_module, "default_stages", recorder.chain)
    result = invoke("run", image, "-o", tmp_path / "out", "--device", "cpu", "-q")
    assert result.exit_code == 130 and "run the same command to resume" in result.stderr
    del recorder.fail["b"]
    recorder.calls.clear()
    assert invoke("run", image, "-o", tmp_path / "out", "--device", "cpu", "-q").exit_code == 0
    assert recorder.calls == ["b", "c"]


def test_an_elevation_beyond_90_degrees_is_refused(fake_stages, image, tmp_path):
    """Beyond +-90 degrees the camera is not above or below the object: a usage error, nothing written."""
    for value in ("100", "-90.5"):
        result = invoke("run", image, "-o", tmp_path / "out", "--device", "cpu", "--elevation", value)
        assert_one_line_error(result, 2, "an elevation from -90 to 90 degrees")
    assert not (tmp_path / "out").exists() and fake_stages.calls == []
    result = invoke("run", image, "-o", tmp_path / "out", "--set", "elevation.value=180")
    assert_one_line_error(result, 2, "elevation.value")
    assert invoke("run", image, "-o", tmp_path / "out", "--device", "cpu", "--elevation", "-90", "-q").exit_code == 0


def test_json_output_is_one_document_on_stdout(fake_stages, image, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", image, "-o", out, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)  # stdout holds the document and nothing else
    assert document["ok"] is True and document["exit_code"] == 0 and document["schema"] == 1
    (entry,) = document["inputs"]
    assert entry["status"] == "ok" and entry["out"] == str(out) and entry["category"] is None
    assert [s["stage"] for s in entry["stages"]] == ["a", "b", "c"]
    assert all(s["status"] == "done" and s["seconds"] >= 0 for s in entry["stages"])
    (artifact,) = entry["artifacts"]  # stage c publishes out.txt
    assert artifact["path"] == "out.txt" and artifact["size"] == (out / "out.txt").stat().st_size
    assert artifact["sha256"] == hashlib.sha256((out / "out.txt").read_bytes()).hexdigest()
    assert "c: done" in (out / "img2mesh.log").read_text()  # the messages went to the log and stderr
    again = json.loads(invoke("run", image, "-o", out, "--device", "cpu", "--json").stdout)
    assert [s["status"] for s in again["inputs"][0]["stages"]] == ["skipped"] * 3


def test_json_output_reports_failures_by_kind(fake_stages, image, tmp_path):
    fake_stages.fail["b"] = StageError("b broke")
    failed = invoke("run", image, "-o", tmp_path / "out", "--device", "cpu", "--json")
    document = json.loads(failed.stdout)
    assert failed.exit_code == 1 and document["ok"] is False and document["exit_code"] == 1
    (entry,) = document["inputs"]
    assert entry["status"] == "failed" and entry["category"] == "stage" and entry["error"] == "b broke"
    assert [s["status"] for s in entry["stages"]] == ["done", "failed"]
    assert failed.stderr.strip().splitlines()[-1] == "error: b broke"  # the line stays on stderr
    usage = invoke("run", image, "-o", tmp_path / "out2", "--json", "--set", "nope=1")
    document = json.loads(usage.stdout)
    assert usage.exit_code == 2 and document["category"] == "usage" and "nope" in document["error"]
    assert document["inputs"] == []


def test_json_batch_lists_every_input(fake_stages, tmp_path):
    folder = tmp_path / "inputs"
    write_rgba(folder / "one.png")
    write_rgba(folder / "two.png")
    (folder / "bad.png").write_bytes(b"not a png")
    result = invoke("run", folder, "-o", tmp_path / "out", "--device", "cpu", "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 1 and document["exit_code"] == 1
    by_name = {Path(e["input"]).name: e for e in document["inputs"]}
    assert by_name["one.png"]["status"] == by_name["two.png"]["status"] == "ok"
    assert by_name["bad.png"]["category"] == "input" and "not an image" in by_name["bad.png"]["error"]


def test_eval_json(tmp_path):
    import trimesh

    from img2mesh.evaluation.gso import GSO_ANGLES_DEG, normalise_ground_truth

    sphere = trimesh.creation.icosphere(subdivisions=3)
    gt = tmp_path / "gt.obj"
    sphere.export(gt)
    pred = tmp_path / "pred.ply"
    normalise_ground_truth(sphere, GSO_ANGLES_DEG["chicken"]).export(pred)  # the prediction is the truth
    result = invoke("eval", pred, "--gt", gt, "--object", "chicken", "--frame", "world", "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 0 and document["ok"] and document["chamfer"] < 1e-3 and document["iou"] > 0.95
    missing = invoke("eval", tmp_path / "nope.glb", "--gt", gt, "--object", "chicken", "--json")
    document = json.loads(missing.stdout)
    assert missing.exit_code != 0 and document["ok"] is False and document["error"]


def test_offline_fails_at_once_without_retries(image, tmp_path):
    """--offline: no download is tried; the weights error says so (no "Retrying in Ns" lines)."""
    env = {"HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    result = run_cli(["run", str(image), "-o", str(tmp_path / "out"), "--device", "cpu", "--elevation", "30",
                      "--offline", "--no-segment"], env)
    assert result.returncode == 1, result.stderr
    message = " ".join(result.stderr.split())
    assert "syncdreamer-pretrain.ckpt" in message and "--offline or HF_HUB_OFFLINE is set" in message
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr


# What a new user hit in their first hour (each failed before it was fixed).

def test_remesh_quad_without_its_package_is_refused_before_any_stage_runs(monkeypatch, recorder, image, tmp_path):
    monkeypatch.setitem(sys.modules, "pyinstantmeshes", None)  # as if not installed: import fails
    monkeypatch.setattr(stages_module, "default_stages",
                        lambda *a, **k: [*recorder.chain(), *[s for s in stages_module.registered_stages()
                                                               if s.name == "mesh"]])
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(image), "-o", str(out), "--remesh", "quad", "--device", "cpu"])
    assert_one_line_error(result, 2, "pyinstantmeshes")
    assert recorder.calls == [] and snapshot(out) == {}


def test_a_run_refused_by_the_lock_leaves_the_live_runs_report_alone(fake_stages, image, tmp_path):
    from img2mesh.pipeline.lock import RunLock

    out = tmp_path / "out"
    assert invoke("run", image, "-o", out, "--device", "cpu", "-q").exit_code == 0
    before = snapshot(out)
    with RunLock(out):
        refused = runner.invoke(app, ["run", str(image), "-o", str(out), "--device", "cpu", "-q", "--force"])
    assert refused.exit_code == 2 and "in use by another img2mesh run" in refused.stderr
    assert snapshot(out) == before  # report.html and report_files/ included


@pytest.mark.parametrize("args", [["--target-faces", "0"], ["--no-such-flag"], []], ids=["bad-value", "unknown", "no-out"])
def test_json_parser_errors_are_one_document_and_one_error_line(fake_stages, image, tmp_path, args):
    out_args = [] if args == [] else ["-o", str(tmp_path / "out")]
    result = runner.invoke(app, ["run", str(image), *out_args, "--json", *args])
    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["error"]
    assert [line for line in result.stderr.splitlines() if line.strip()][-1].startswith("error:")
    assert "╭" not in result.stderr and "Traceback" not in result.output


def test_run_help_names_the_ray_extra():
    result = invoke("run", "--help")
    assert "img2mesh[ray]" in " ".join(result.output.split())


def test_tables_piped_to_a_file_are_not_cut_at_80_columns(tmp_path):
    listing = subprocess.run([sys.executable, "-m", "img2mesh", "weights", "list"], capture_output=True, text=True,
                             env={**os.environ, "COLUMNS": ""}, check=True).stdout
    assert max(len(line) for line in listing.splitlines()) > 100, listing
    assert "…" not in listing


def test_from_a_stage_on_an_empty_out_writes_nothing(fake_stages, image, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(image), "-o", str(out), "--from", "c", "--device", "cpu"])
    assert result.exit_code == 1 and "no up-to-date result" in " ".join(result.stderr.split()), result.stderr
    assert not out.exists()


def test_a_newcomers_rough_edges_are_smooth(fake_stages, image, tmp_path):
    """One bad input: its error line only (no empty table); -q: no divider; -q -v: refused; wording."""
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = invoke("run", empty, "-o", tmp_path / "out", "--device", "cpu")
    assert_one_line_error(result, 1, "is empty (0 bytes)")
    assert result.stdout.strip() == ""
    second = write_rgba(tmp_path / "two.png", seed=4)
    quiet = invoke("run", image, second, "-o", tmp_path / "batch", "--device", "cpu", "-q")
    assert quiet.exit_code == 0 and "─" not in quiet.stderr
    assert_one_line_error(invoke("run", image, "-o", tmp_path / "o2", "-q", "-v"), 2, "contradict")
    twice = invoke("run", image, image, "-o", tmp_path / "o3")
    assert_one_line_error(twice, 2, f"input {image} is given twice")
    assert "also as" not in twice.stderr
    assert_one_line_error(invoke("run", image, "-o", tmp_path / "o4", "--config", tmp_path), 2, "is a folder")
    bogus = invoke("run", image, "-o", tmp_path / "o5", "--bogus")
    assert_one_line_error(bogus, 2, "No such option: --bogus")
    assert "--verbose" not in bogus.stderr and "--out" not in bogus.stderr
    assert "did you mean --seed?" in invoke("run", image, "-o", tmp_path / "o6", "--seeed", "3").stderr


def test_help_shows_choices_and_no_python_types():
    for command in (["run"], ["reconstruct"], ["eval"], ["config"], ["weights", "download"], []):
        text = invoke(*command, "--help").stdout
        assert "<bool>" not in text and "<list[" not in text and "<str>" not in text, command
        assert "{" not in text and ",--" not in text, command
    run_help = " ".join(invoke("run", "--help").stdout.split())
    assert "IMAGE_OR_FOLDER..." in run_help and "demo" in run_help
    for stage in ("segment", "elevation", "generate", "reconstruct", "mesh", "refine"):
        assert stage in run_help
    assert "--weights" not in run_help or "old name" in run_help  # the alias is hidden, named once


def test_a_reader_that_leaves_early_is_not_a_failure():
    for command in ("doctor", "run --help", "stages"):
        done = subprocess.run(f"set -o pipefail; {sys.executable} -m img2mesh {command} | head -1", shell=True,
                              executable="/bin/bash", capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)
        assert "Traceback" not in done.stderr and "Broken pipe" not in done.stderr


def test_sigterm_is_an_interruption_with_a_line_and_exit_143(image, tmp_path):
    """What a batch scheduler sends: the stage is marked interrupted, the run says so, exit 143."""
    import signal
    import time

    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "img2mesh", "run", str(image), "-o", str(out), "--preset",
                                "demo", "--device", "cpu", "--set", "generate.steps=50"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "generate" not in (out / "img2mesh.log").read_text() \
            if (out / "img2mesh.log").is_file() else time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "terminated (SIGTERM)" in stderr and "run the same command to resume" in " ".join(stderr.split())
    stages = json.loads((out / "img2mesh.json").read_text())["stages"]
    assert "interrupted" in {record.get("status") for record in stages.values()}


def test_json_of_reconstruct_on_an_empty_views_folder_has_no_inputs_and_a_report_path_otherwise(
        fake_stages, image, tmp_path):
    empty = tmp_path / "views"
    empty.mkdir()
    result = runner.invoke(app, ["reconstruct", str(empty), "-o", str(tmp_path / "out"), "--json"])
    document = json.loads(result.stdout)
    assert result.exit_code == 2 and document["inputs"] == [] and "holds no views" in document["error"]
    ran = json.loads(invoke("run", image, "-o", tmp_path / "ok", "--device", "cpu", "--json").stdout)
    assert ran["inputs"][0]["report"] == str(tmp_path / "ok" / "report.html")
    assert (tmp_path / "ok" / "report.html").is_file() and ran["inputs"][0]["random_weights"] == []
