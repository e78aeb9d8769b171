"""The contract between the runner and a stage.

A stage declares what it reads (upstream stages), what it writes (files under ``OUT/<stage>/``),
which config keys change its result, and which of its files are published at the top of ``OUT/``.
Its ``run`` function receives a :class:`StageContext` and writes only into ``ctx.out_dir``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional

from img2mesh.pipeline.models import ModelCache

if TYPE_CHECKING:
    from img2mesh.pipeline.config import Config
    from img2mesh.pipeline.reporting import ProgressTask


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: the stage's name, also its folder under ``OUT/``.
        description: one line for ``img2mesh stages``.
        reads: upstream stages whose folders ``run`` reads.
        outputs: files (glob patterns) the stage must have written, relative to its folder.
        config_keys: dotted keys or sections whose values enter the stage's fingerprint.
        publish: files (glob patterns) copied to the top of ``OUT/`` once the stage succeeds.
        version: bump when the stage's code changes its results, so old outputs are re-made.
        run: the stage's work; returns facts for the manifest (JSON-serialisable).
        check_input: validates the input image before anything is written; raises InputError.
        models: names of the models ``run`` takes from ``ctx.models``; the runner moves a model off
            the GPU once no later stage of the input names it.
    """

    name: str
    description: str
    reads: tuple[str, ...]
    outputs: tuple[str, ...]
    config_keys: tuple[str, ...]
    run: Callable[["StageContext"], Optional[dict[str, Any]]]
    publish: tuple[str, ...] = ()
    version: int = 1
    check_input: Optional[Callable[[Path, "Config"], None]] = None
    models: tuple[str, ...] = ()


@dataclass
class StageContext:
    """What a running stage may use. It writes only under ``out_dir``.

    ``out_dir`` is a staging folder: the runner moves it to ``OUT/<stage>/`` only after ``run``
    returns, so a stage that dies half-way never leaves files a resume would trust. When a stage
    is re-run with the same fingerprint after an interruption, ``out_dir`` still holds what the
    interrupted attempt wrote (``resumed`` is True), so long stages can continue from checkpoints.
    """

    stage: str
    input_path: Path
    run_dir: Path
    out_dir: Path
    config: "Config"
    device: str
    upstream: dict[str, Path]
    resumed: bool
    log: logging.Logger
    progress: Callable[..., ContextManager["ProgressTask"]]
    info: dict[str, Any] = field(default_factory=dict)
    models: ModelCache = field(default_factory=ModelCache)

    def stage_dir(self, name: str) -> Path:
        """The finished folder of an upstream stage this stage declared in ``reads``."""
        try:
            return self.upstream[name]
        except KeyError:
            raise KeyError(f"stage {self.stage} did not declare that it reads {name}") from None
