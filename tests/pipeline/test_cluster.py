"""Batches on Ray (``img2mesh run --ray``): a local Ray instance with two one-CPU workers.

The worker processes import the test stages from tests/helpers (PYTHONPATH is set before Ray starts).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from img2mesh.app import config_schema
from img2mesh.console import batch_progress_table
from img2mesh.errors import UsageError
from img2mesh.pipeline.batch import RunRequest, run_request, run_request_on_cluster
from img2mesh.pipeline.cluster import ClusterOptions, plan_workers

from helpers.cluster_stages import ledger, traced_chain
from helpers.images import write_rgba
from helpers.stages import snapshot

SCHEMA = config_schema()

TESTS = Path(__file__).resolve().parents[1]


def render(table) -> str:
    from rich.console import Console

    console = Console(record=True, width=120, file=open(os.devnull, "w"))
    console.print(table)
    return console.export_text()
TWO = ClusterOptions("auto", workers=2)


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'img2mesh[ray]')")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), before) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before


def photos(folder: Path, count: int = 3) -> Path:
    for index in range(count):
        write_rgba(folder / f"p{index}.png", size=(64 + 8 * index, 48), seed=index)
    return folder


def request(inputs: Path, out: Path, **extra) -> RunRequest:
    return RunRequest(inputs=[inputs], out=out, preset="smoke", values={"run.device": "cpu"}, **extra)


def test_plan_one_worker_per_gpu_else_shares_the_cpus():
    assert plan_workers({"GPU": 4, "CPU": 64}, None, "auto") == (4, {"num_gpus": 1, "num_cpus": 2})
    assert plan_workers({"GPU": 4, "CPU": 64}, 2, "auto")[0] == 2
    assert plan_workers({"GPU": 4, "CPU": 64}, 9, "auto")[0] == 4  # a fifth worker would never start
    assert plan_workers({"GPU": 4, "CPU": 16}, None, "cpu") == (4, {"num_cpus": 4})  # --device cpu: no GPUs
    assert plan_workers({"CPU": 2}, None, "auto") == (1, {"num_cpus": 2})
    assert plan_workers({"CPU": 2}, 2, "auto") == (2, {"num_cpus": 1})
    with pytest.raises(UsageError, match="no GPU"):
        plan_workers({"CPU": 8}, None, "cuda:0")


class FakeRay:
    """Records ``ray.init`` calls; no cluster answers any address."""

    def __init__(self, initialized: bool = False) -> None:
        self.calls: list[dict] = []
        self.initialized = initialized

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        self.calls.append(kwargs)
        if "address" in kwargs:
            raise ConnectionError("Could not find any running Ray instance.")


def test_connect_auto_falls_back_to_local_only_when_no_cluster_is_named(monkeypatch):
    from img2mesh.pipeline.cluster import connect

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray = FakeRay()
    assert connect(ray, "auto") is True
    assert [c.get("address") for c in ray.calls] == ["auto", None]  # tried the cluster, then local
    assert connect(FakeRay(initialized=True), "auto") is False  # already in a Ray session: reuse it
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    with pytest.raises(UsageError, match="cannot join the Ray cluster at 10.0.0.9:6379"):
        connect(FakeRay(), "auto")
    with pytest.raises(UsageError, match="--ray head:6379: cannot join"):
        connect(FakeRay(), "head:6379")


def test_without_ray_one_line_names_the_extra(tmp_path, monkeypatch):
    from img2mesh.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(photos(tmp_path / "in")), "-o", str(out), "--ray", "auto"])
    assert result.exit_code == 2
    assert "pip install 'img2mesh[ray]'" in result.output and "Traceback" not in result.output
    assert not out.exists()
    workers = CliRunner().invoke(app, ["run", str(tmp_path / "in"), "-o", str(out), "--workers", "2"])
    assert workers.exit_code == 2 and "--workers needs --ray" in workers.output


@pytest.mark.parametrize("tiny", [["--set", "generate.model=tiny", "--set", "generate.random_weights=true",
                                   "--set", "generate.steps=1", "--set", "generate.guidance=cfg",
                                   "--set", "generate.cfg_scale=1"]])
def test_ray_batch_equals_local_batch(ray_instance, tmp_path, tiny):
    """The real stages up to generate with a tiny random-weight SyncDreamer: same files, same digests.

    Each worker has one CPU, so torch runs one thread there; the local batch does the same, since
    torch's CPU sums split by thread count and round differently (a GPU has no such difference).
    """
    import torch

    from img2mesh.cli import app

    threads = torch.get_num_threads()

    inputs = photos(tmp_path / "in")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    common = ["--preset", "smoke", "--device", "cpu", "--until", "generate", "--elevation", "30", "-q", *tiny]
    torch.set_num_threads(1)
    try:
        local = CliRunner().invoke(app, ["run", str(inputs), "-o", str(tmp_path / "local"), *common])
    finally:
        torch.set_num_threads(threads)
    on_ray = CliRunner().invoke(app, ["run", str(inputs), "-o", str(tmp_path / "ray"), "--ray", "auto",
                                      "--workers", "2", *common])
    for result in (local, on_ray):  # a bad input among good ones: exit 1, the summary names it
        assert result.exit_code == 1, result.output
        assert "3 of 4 inputs succeeded" in result.output and "broken.png:" in result.output

    def results(out: Path) -> dict[str, str]:  # manifests and logs hold times; the index page links times
        return {k: v for k, v in snapshot(out).items()
                if not k.endswith(("img2mesh.json", "report.html", "index.html"))}

    assert results(tmp_path / "ray") == results(tmp_path / "local")
    assert len([k for k in results(tmp_path / "ray") if k.endswith("generate/sample_0/15.png")]) == 3
    statuses = {json.loads((tmp_path / "ray" / f"p{i}" / "img2mesh.json").read_text())["stages"]["generate"]["status"]
                for i in range(3)}
    assert statuses == {"done"}


def test_killed_worker_input_resumes_on_another(ray_instance, tmp_path):
    inputs = photos(tmp_path / "in", 4)
    out = tmp_path / "out"
    (tmp_path / "hang-p1").write_text("")  # p1's stage b waits until we kill its worker
    pid_file = tmp_path / "hang-p1.pid"
    killed = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    results = run_request_on_cluster(request(inputs, out), SCHEMA, traced_chain, TWO)
    thread.join()
    assert killed and [r.ok for r in results] == [True] * 4
    lines = ledger(out)
    for name in ("p0", "p2", "p3"):
        assert [line for line in lines if line.endswith(name)] == [f"a {name}", f"b {name}", f"c {name}"]
    assert [line for line in lines if line.endswith("p1")] == ["a p1", "b p1", "b p1", "c p1"]  # a not redone
    stages = json.loads((out / "p1" / "img2mesh.json").read_text())["stages"]
    retry = stages["b"]["info"]
    assert retry["resumed"] and retry["found_scratch"] and not retry["published_before"]
    assert retry["pid"] != killed[0]
    size = (inputs / "p1.png").stat().st_size
    assert (out / "p1" / "out.txt").read_text() == f"a({size});b({size});c({size});"
    assert not (out / "p1" / ".partial").exists() and not (out / "p1" / "b" / "half.txt").exists()


def test_bad_input_among_good_is_reported_not_retried(ray_instance, tmp_path):
    inputs = photos(tmp_path / "in")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "out"
    local = run_request(request(inputs, tmp_path / "local"), SCHEMA, traced_chain())
    results = run_request_on_cluster(request(inputs, out), SCHEMA, traced_chain, TWO)
    assert [(r.image.name, r.ok, r.error) for r in results] == [(r.image.name, r.ok, r.error) for r in local]
    assert [r.image.name for r in results if not r.ok] == ["broken.png"]
    assert not any(line.endswith("broken") for line in ledger(out))  # refused before any stage ran
    assert all((out / f"p{i}" / "out.txt").is_file() for i in range(3))


def test_out_not_shared_is_refused_before_any_work(ray_instance, tmp_path, monkeypatch):
    import img2mesh.pipeline.cluster as cluster

    inputs = photos(tmp_path / "in")
    out = tmp_path / "out"
    elsewhere = tmp_path / "driver-only"

    def written_where_workers_cannot_see(folder: Path):
        path, token = elsewhere / cluster.STORAGE_TOKEN, "secret"
        elsewhere.mkdir(exist_ok=True)
        path.write_text(token)
        return folder / cluster.STORAGE_TOKEN, token

    monkeypatch.setattr(cluster, "write_storage_token", written_where_workers_cannot_see)
    with pytest.raises(UsageError, match="not shared with every Ray worker"):
        run_request_on_cluster(request(inputs, out), SCHEMA, traced_chain, TWO)
    assert ledger(out) == [] and not any(p.is_dir() for p in out.iterdir())


def test_worker_that_cannot_start_is_one_line(ray_instance, tmp_path):
    from helpers.cluster_stages import chain_that_fails_in_workers

    with pytest.raises(UsageError, match="a Ray worker could not start .*missing_dependency"):
        run_request_on_cluster(request(photos(tmp_path / "in"), tmp_path / "out"), SCHEMA, chain_that_fails_in_workers, TWO)
    assert ledger(tmp_path / "out") == []


def test_worker_names_an_input_it_cannot_see(tmp_path):
    from img2mesh.pipeline.cluster import BatchWorker

    token = tmp_path / "token"
    token.write_text("t0")
    here = write_rgba(tmp_path / "here.png")
    check = BatchWorker.check_storage  # the check needs no state: called here without Ray
    assert check(None, str(token), "t0", [str(here)]) is None
    assert "the input /elsewhere/x.png does not exist" in check(None, str(token), "t0", [str(here), "/elsewhere/x.png"])
    assert f"{token} is t0" in check(None, str(token), "other", [str(here)])


def test_ctrl_c_abandons_running_inputs_and_the_next_run_resumes(ray_instance, tmp_path):
    inputs = photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    (tmp_path / "hang-p0").write_text("")

    seen = []

    def interrupt(progress) -> None:  # Ctrl-C once the live view shows p0 in its hanging stage b
        if any(w.input == "p0.png" and w.stage == "b" for w in progress.workers):
            seen.append(render(batch_progress_table(progress)))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_request_on_cluster(request(inputs, out), SCHEMA, traced_chain, TWO, watch=interrupt)
    assert "inputs: " in seen[0] and " running" in seen[0] and "p0.png" in seen[0] and "│ b " in seen[0]
    assert not (out / "p0" / "b").exists() and (out / "p0" / "a" / "out.txt").is_file()
    results = run_request_on_cluster(request(inputs, out), SCHEMA, traced_chain, TWO)
    assert all(r.ok for r in results)
    assert [line for line in ledger(out) if line.endswith("p0")] == ["a p0", "b p0", "b p0", "c p0"]
