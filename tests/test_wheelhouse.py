"""``make wheelhouse``: which wheels, for which target (the download itself needs an index)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wheelhouse():
    spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "tools" / "wheelhouse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_linux_targets_accept_older_manylinux_wheels():
    tags = wheelhouse().compatible_platforms("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags
    assert "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert wheelhouse().compatible_platforms("win_amd64") == ["win_amd64"]


def test_the_tree_has_every_dependency_but_torch():
    tree, left_out = wheelhouse().requirement_tree("3.11", "manylinux_2_28_x86_64", with_torch=False)
    assert {"diffusers", "carvekit", "typing", "pymcubes", "xatlas", "nerfacc", "huggingface-hub"} <= set(tree)
    assert left_out == {"torch", "torchvision"} and not any(name.startswith("nvidia") for name in tree)
    with_torch, _ = wheelhouse().requirement_tree("3.11", "manylinux_2_28_x86_64", with_torch=True)
    assert "torch" in with_torch and len(with_torch) > len(tree)


def test_markers_are_evaluated_for_the_target():
    environment = wheelhouse().marker_environment("3.12", "win_amd64")
    assert environment["sys_platform"] == "win32" and environment["python_version"] == "3.12"
    assert wheelhouse().marker_environment("3.10", "macosx_11_0_arm64")["platform_machine"] == "arm64"
