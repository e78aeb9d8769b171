"""The stage runner: resume, invalidation, interruption, locking, publishing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from img2mesh.app import load_config
from img2mesh.console import ConsoleReporter
from img2mesh.errors import LockedError, StageError
from img2mesh.pipeline.lock import LOCK_NAME, RunLock
from img2mesh.pipeline.runner import Runner

from helpers.stages import snapshot


def make_runner(stages, **overrides) -> Runner:
    cfg = load_config(overrides=[f"{k}={v}" for k, v in overrides.items()])
    return Runner(stages, cfg, "cpu", ConsoleReporter(quiet=True))


def statuses(result) -> dict[str, str]:
    return {o.stage: o.status for o in result.outcomes}


def manifest(out: Path) -> dict:
    return json.loads((out / "img2mesh.json").read_text())


def test_first_run_runs_everything_and_records_the_manifest(image, tmp_path, recorder):
    out = tmp_path / "out"
    result = make_runner(recorder.chain()).run(image, out)
    assert result.ok, result.error
    assert recorder.calls == ["a", "b", "c"]
    assert (out / "c" / "out.txt").read_text() == "a(200);b(50);c(256);"
    data = manifest(out)
    assert data["input"]["sha256"] and data["input"]["size"] == image.stat().st_size
    assert data["config"]["generate"]["steps"] == 50
    assert data["device"] == "cpu"
    for name in "abc":
        record = data["stages"][name]
        assert record["status"] == "done"
        assert len(record["fingerprint"]) == 64
        assert record["outputs"]["out.txt"]["size"] == (out / name / "out.txt").stat().st_size
        assert record["info"] == {"ran": name}
    assert (out / "img2mesh.log").read_text().count("done in") == 3


def test_rerun_skips_finished_stages(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    before = snapshot(out / "c")
    result = make_runner(recorder.chain()).run(image, out)
    assert recorder.calls == ["a", "b", "c"]  # nothing ran the second time
    assert statuses(result) == {"a": "skipped", "b": "skipped", "c": "skipped"}
    assert snapshot(out / "c") == before
    assert "b: up to date, skipped" in (out / "img2mesh.log").read_text()


def test_changed_option_reruns_that_stage_and_downstream_only(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    recorder.calls.clear()
    result = make_runner(recorder.chain(), **{"generate.steps": 7}).run(image, out)
    assert recorder.calls == ["b", "c"]
    assert statuses(result) == {"a": "skipped", "b": "done", "c": "done"}
    assert (out / "c" / "out.txt").read_text() == "a(200);b(7);c(256);"
    recorder.calls.clear()
    make_runner(recorder.chain(), **{"generate.steps": 7, "mesh.resolution": 64}).run(image, out)
    assert recorder.calls == ["c"]


def test_unrelated_option_changes_nothing(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    recorder.calls.clear()
    make_runner(recorder.chain(), **{"reconstruct.steps": 5}).run(image, out)
    assert recorder.calls == []


def test_force_reruns_everything(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    recorder.calls.clear()
    make_runner(recorder.chain()).run(image, out, force=True)
    assert recorder.calls == ["a", "b", "c"]


def test_from_reruns_from_that_stage_and_needs_upstream(image, tmp_path, recorder):
    out = tmp_path / "out"
    result = make_runner(recorder.chain()).run(image, out, from_stage="b")
    assert not result.ok and "stage a has no up-to-date result" in result.error
    assert not (out / "b").exists()
    make_runner(recorder.chain()).run(image, out)
    recorder.calls.clear()
    result = make_runner(recorder.chain()).run(image, out, from_stage="b")
    assert result.ok
    assert recorder.calls == ["b", "c"]
    assert statuses(result)["a"] == "kept"


def test_until_stops_and_marks_outdated_downstream_stale(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    recorder.calls.clear()
    result = make_runner(recorder.chain(), **{"generate.steps": 3}).run(image, out, until_stage="b")
    assert recorder.calls == ["b"]
    assert statuses(result)["c"] == "not run"
    assert manifest(out)["stages"]["c"]["status"] == "stale"
    recorder.calls.clear()
    make_runner(recorder.chain(), **{"generate.steps": 3}).run(image, out)
    assert recorder.calls == ["c"]


def test_missing_output_file_is_not_trusted(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    (out / "b" / "out.txt").unlink()
    recorder.calls.clear()
    make_runner(recorder.chain()).run(image, out)
    assert recorder.calls == ["b"]  # b re-made the same bytes, so c is still up to date


def test_changed_upstream_output_invalidates_readers(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    chain = recorder.chain()
    # b re-runs with the same config but writes other bytes, as a non-deterministic stage might.
    chain[1] = recorder.stage("b", reads=("a",), keys=("generate.steps",),
                              body=lambda ctx: (ctx.out_dir / "extra.txt").write_text("new"))
    recorder.calls.clear()
    make_runner(chain).run(image, out, from_stage="b", until_stage="b")
    assert recorder.calls == ["b"]
    assert manifest(out)["stages"]["c"]["status"] == "stale"
    recorder.calls.clear()
    make_runner(chain).run(image, out)
    assert recorder.calls == ["c"]


def test_final_artifacts_are_published_at_the_top(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    assert (out / "out.txt").read_text() == (out / "c" / "out.txt").read_text()
    assert manifest(out)["stages"]["c"]["published"] == ["out.txt"]
    (out / "out.txt").unlink()  # a user deleted the copy: a skipped stage puts it back
    make_runner(recorder.chain()).run(image, out)
    assert (out / "out.txt").is_file()


def test_failing_stage_keeps_previous_outputs_and_resumes(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    good = snapshot(out / "b")
    recorder.fail["b"] = RuntimeError("boom half-way")
    recorder.calls.clear()
    result = make_runner(recorder.chain(), **{"generate.steps": 9}).run(image, out)
    assert not result.ok and "stage b failed: RuntimeError: boom half-way" in result.error
    assert result.exit_code == 1
    assert statuses(result) == {"a": "skipped", "b": "failed"}
    assert snapshot(out / "b") == good  # the half-written attempt never replaced the old folder
    record = manifest(out)["stages"]["b"]
    assert record["status"] == "failed" and "boom" in record["error"]
    del recorder.fail["b"]
    recorder.calls.clear()
    result = make_runner(recorder.chain(), **{"generate.steps": 9}).run(image, out)
    assert result.ok and recorder.calls == ["b", "c"]
    assert recorder.resumed["b"] is True  # same fingerprint: the attempt's folder is handed back
    assert (out / "c" / "out.txt").read_text() == "a(200);b(9);c(256);"
    assert not (out / ".partial").exists()


def test_a_stage_failing_before_it_wrote_anything_leaves_no_staging_folder(image, tmp_path):
    """Generate without its weights fails before writing: nothing to resume from, so no OUT/.partial/."""
    from img2mesh.errors import WeightsError
    from img2mesh.pipeline.contract import Stage

    def no_weights(ctx):
        raise WeightsError("syncdreamer-pretrain.ckpt is not here")

    out = tmp_path / "out"
    result = make_runner([Stage("g", "", (), ("x",), (), run=no_weights)]).run(image, out)
    assert not result.ok and "is not here" in result.error
    assert not (out / ".partial").exists()


def test_stage_that_forgets_an_output_fails(image, tmp_path, recorder):
    stage = recorder.stage("a")
    broken = type(stage)(**{**stage.__dict__, "outputs": ("out.txt", "mesh.glb")})
    result = make_runner([broken]).run(image, tmp_path / "out")
    assert not result.ok and "finished without writing mesh.glb" in result.error


def test_other_input_in_same_folder_is_refused_without_force(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    from helpers.images import write_rgba

    other = write_rgba(tmp_path / "dog.png", seed=3)
    before = snapshot(out, with_log=True)
    result = make_runner(recorder.chain()).run(other, out)
    assert not result.ok and "holds the results of another input" in result.error
    assert result.exit_code == 2 and result.category == "occupied"  # as the lock's refusal: nothing ran
    assert snapshot(out, with_log=True) == before  # not even the other run's log gets a line
    assert make_runner(recorder.chain()).run(other, out, force=True).ok


def test_lock_refuses_a_second_run(image, tmp_path, recorder):
    out = tmp_path / "out"
    with RunLock(out):
        result = make_runner(recorder.chain()).run(image, out)
    assert not result.ok and "in use by another img2mesh run" in result.error
    assert result.exit_code == 2
    assert recorder.calls == []


def test_lock_held_by_another_process(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from img2mesh.pipeline.lock import RunLock
        with RunLock({str(out)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            RunLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock file is stale and is taken over.
    assert (out / LOCK_NAME).exists()
    with RunLock(out):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()


KILLED_SCRIPT = """
import sys, time
from pathlib import Path
from img2mesh.app import load_config
from img2mesh.console import ConsoleReporter
from img2mesh.pipeline.runner import Runner
from img2mesh.pipeline.contract import Stage

def slow(ctx):
    (ctx.out_dir / "out.txt").write_text("half a fi")  # deliberately not atomic
    print("writing", flush=True)
    time.sleep(60)

stages = [Stage("a", "", (), ("out.txt",), (), run=slow)]
Runner(stages, load_config(), "cpu", ConsoleReporter(quiet=True)).run(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_killed_process_leaves_nothing_a_resume_would_trust(image, tmp_path, recorder):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, str(image), str(out)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert not (out / "a").exists()  # the half file sits in the staging folder only
    assert manifest(out)["stages"]["a"]["status"] == "running"
    result = make_runner([recorder.stage("a")]).run(image, out)  # lock is stale: taken over
    assert result.ok, result.error
    assert recorder.calls == ["a"]
    assert (out / "a" / "out.txt").read_text() == "a();"


def test_interrupt_marks_stage_and_propagates(image, tmp_path, recorder):
    out = tmp_path / "out"
    recorder.fail["b"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        make_runner(recorder.chain()).run(image, out)
    assert manifest(out)["stages"]["b"]["status"] == "interrupted"
    assert not (out / LOCK_NAME).exists()
    del recorder.fail["b"]
    recorder.calls.clear()
    assert make_runner(recorder.chain()).run(image, out).ok
    assert recorder.calls == ["b", "c"]


def test_unreadable_manifest_is_kept_aside(image, tmp_path, recorder):
    out = tmp_path / "out"
    make_runner(recorder.chain()).run(image, out)
    (out / "img2mesh.json").write_text("{ truncated")
    recorder.calls.clear()
    assert make_runner(recorder.chain()).run(image, out).ok
    assert recorder.calls == ["a", "b", "c"]
    assert (out / "img2mesh.json.unreadable").read_text() == "{ truncated"


def test_stage_error_class_is_kept(image, tmp_path, recorder):
    recorder.fail["a"] = StageError("no object found in cat.png")
    result = make_runner(recorder.chain()).run(image, tmp_path / "out")
    assert result.error == "no object found in cat.png"


class FakeNetwork:
    """Stands for a model on a GPU: records where the model cache moves it."""

    def __init__(self, moves: list) -> None:
        self.moves = moves

    def to(self, device: str) -> "FakeNetwork":
        self.moves.append(device)
        return self


def model_stages(recorder, loads: list, moves: list, seen: dict):
    """load -> use (both take model "net" from the cache) -> after (uses none)."""
    from dataclasses import replace

    def take(ctx):
        ctx.models.get("net", "v1", lambda: loads.append(1) or FakeNetwork(moves), "cuda:0")

    def look(ctx):
        seen.setdefault(ctx.input_path.name, []).append(ctx.models.loaded())

    stages = [recorder.stage("load", body=take), recorder.stage("use", reads=("load",), body=take),
              recorder.stage("after", reads=("use",), body=look)]
    return [replace(stages[0], models=("net",)), replace(stages[1], models=("net",)), stages[2]]


def test_a_model_leaves_the_gpu_once_no_later_stage_uses_it(image, tmp_path, recorder):
    loads, moves, seen = [], [], {}
    runner = make_runner(model_stages(recorder, loads, moves, seen))
    assert runner.run(image, tmp_path / "out").ok
    assert seen[image.name] == [{}]  # one input: dropped before "after" ran
    assert loads == [1] and moves == []


def test_a_batch_parks_models_on_the_cpu_and_reuses_them(image, tmp_path, recorder):
    from helpers.images import write_rgba

    second = write_rgba(tmp_path / "inputs" / "dog.png", seed=1)
    loads, moves, seen = [], [], {}
    runner = make_runner(model_stages(recorder, loads, moves, seen))
    assert runner.run(image, tmp_path / "a", more_inputs=True).ok
    assert seen[image.name] == [{"net": "parked"}] and moves == ["cpu"]
    assert runner.run(second, tmp_path / "b").ok  # the last input: dropped after use
    assert seen[second.name] == [{}]
    assert loads == [1] and moves == ["cpu", "cuda:0"]  # loaded once, moved back for the second input
    runner.close()
    assert runner.models.loaded() == {}


def test_a_failing_stage_still_releases_models(image, tmp_path, recorder):
    loads, moves, seen = [], [], {}
    recorder.fail["use"] = StageError("boom")
    runner = make_runner(model_stages(recorder, loads, moves, seen))
    result = runner.run(image, tmp_path / "out", more_inputs=True)
    assert not result.ok and runner.models.loaded() == {"net": "parked"}
