"""Shared fixtures: small images, test-only stages, and a way to snapshot an output folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest
from PIL import Image

from img2mesh.pipeline.stage import Stage, StageContext
from img2mesh.utils.files import atomic_write_text


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` skip, saying why, where no CUDA device is visible."""
    import torch

    if torch.cuda.is_available():
        return
    why = "no CUDA device (the gpu tests run in `make gpu-check` on a GPU machine)"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))


def write_rgba(path: Path, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """A small RGBA PNG with an opaque rectangle on transparent background."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size[1], size[0], 4), np.uint8)
    img[8:-8, 10:-10, :3] = rng.integers(0, 255, 3)
    img[8:-8, 10:-10, 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_rgba(tmp_path / "inputs" / "cat.png")


def snapshot(folder: Path, with_log: bool = False) -> dict[str, str]:
    """Every file under ``folder`` with the digest of its content (empty when absent).

    The run log is left out unless asked for: refusing an input appends the reason to it.
    """
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (with_log or p.name != "img2mesh.log")
    }


class Recorder:
    """Test-only stages that record how often they ran and what they saw."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.resumed: dict[str, bool] = {}
        self.fail: dict[str, BaseException] = {}

    def stage(self, name: str, reads: tuple[str, ...] = (), keys: tuple[str, ...] = (),
              publish: tuple[str, ...] = (), body: Optional[Callable[[StageContext], None]] = None,
              check_input: Optional[Callable] = None) -> Stage:
        def run(ctx: StageContext) -> dict[str, Any]:
            self.calls.append(name)
            self.resumed[name] = ctx.resumed
            upstream = "".join((ctx.stage_dir(r) / "out.txt").read_text() for r in reads)
            atomic_write_text(ctx.out_dir / "out.txt", f"{upstream}{name}({','.join(str(ctx.config.get(k)) for k in keys)});")
            if body is not None:
                body(ctx)
            if name in self.fail:
                raise self.fail[name]
            return {"ran": name}

        return Stage(name=name, description=f"test stage {name}", reads=reads, outputs=("out.txt",),
                     config_keys=keys, run=run, publish=publish, check_input=check_input)

    def chain(self) -> list[Stage]:
        """a -> b -> c, each depending on one config key (keys from the real schema).

        ``a`` validates the input as the real first stage does.
        """
        from img2mesh.segment.stage import check_input

        return [
            self.stage("a", keys=("segment.crop_size",), check_input=check_input),
            self.stage("b", reads=("a",), keys=("generate.steps",)),
            self.stage("c", reads=("b",), keys=("mesh.resolution",), publish=("out.txt",)),
        ]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def conformance_dir() -> Path:
    """``IMG2MESH_CONFORMANCE_DIR``, default ``../shared/conformance`` beside the repository."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "conformance"
    return Path(os.environ.get("IMG2MESH_CONFORMANCE_DIR", default))


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
