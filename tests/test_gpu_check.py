"""``make gpu-check`` in its quick CPU mode: the same seven checks, tiny models, so the command cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_quick_mode_runs_every_check_and_ends_with_the_table(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    checks = [row["check"] for row in results["rows"]]
    assert checks[0] == "gpu tests" and checks.count("generate") == 2 and checks[-1] == "end to end"
    assert "reconstruct + mesh" in checks and "feedback" in checks and "enhance" in checks and "refine" in checks
    assert all(row["ok"] for row in results["rows"]), results["rows"]
    assert "tests collected" in results["rows"][0]["result"]  # the gpu tests at least import and collect
    table = done.stdout.strip().splitlines()
    assert table[-len(results["rows"]) - 2] == "| check | setting | result | seconds | peak GiB |"
    assert (tmp_path / "e2e" / "mesh.glb").is_file() and (tmp_path / "pytest-gpu.log").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_full_mode_without_a_gpu_says_so():
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "no CUDA device" in done.stderr and "--quick" in done.stderr
