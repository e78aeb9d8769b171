"""Fixtures and hooks shared by every test (helpers live in ``tests/helpers/``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.data import conformance_dir
from helpers.images import write_rgba
from helpers.stages import Recorder


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` skip, saying why, where no CUDA device is visible."""
    import torch

    if torch.cuda.is_available():
        return
    why = "no CUDA device (the gpu tests run in `make gpu-check` on a GPU machine)"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_rgba(tmp_path / "inputs" / "cat.png")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="session")
def conformance() -> Path:
    folder = conformance_dir()
    if not (folder / "vectors" / "index.json").is_file():
        pytest.skip(f"conformance vectors not found in {folder} (set IMG2MESH_CONFORMANCE_DIR)")
    return folder


@pytest.fixture
def img2mesh_log(caplog):
    """caplog wired to the img2mesh logger directly (the CLI's Reporter stops its propagation)."""
    import logging

    logger = logging.getLogger("img2mesh")
    old_level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old_level)
