"""The contract between the framework and a stage, and between the runner and whoever watches it.

A stage declares what it reads (upstream stages), what it writes (files under ``OUT/<stage>/``),
which config keys change its result, and which of its files are published at the top of ``OUT/``.
It also brings its own parts: its config section, the weight files it uses and its panel of the
HTML report, which the application assembles (adding a stage touches its package and one line of
``img2mesh/app.py``). Its ``run`` function receives a :class:`StageContext` and writes only into
``ctx.out_dir``.

The runner reports through a :class:`Reporter` (progress of loops, where a run's log goes, one
line per input of a batch); the CLI's Rich console is one, :class:`SilentReporter` (the default,
for use from Python) another. The runner never configures logging itself.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Mapping, Optional, Protocol, Sequence

from img2mesh.pipeline.models import ModelCache

if TYPE_CHECKING:
    from img2mesh.pipeline.config import Config
    from img2mesh.utils.weights import WeightFile

# A stage's panel of OUT/report.html: (the run folder, the manifest's stage records) -> HTML ("" for none).
ReportPanel = Callable[[Path, Mapping[str, Any]], str]

__all__ = ["ModelCache", "ProgressTask", "Reporter", "SilentReporter", "Stage", "StageContext"]


class ProgressTask(Protocol):
    """What a stage reports one loop's progress to."""

    def advance(self, steps: float = 1, **fields: Any) -> None:
        """Move on by ``steps``; ``fields`` (e.g. ``loss=0.12``) describe the current state."""


class Reporter(Protocol):
    """What the runner tells about its work. Implementations may draw, log, or do nothing."""

    verbose: bool  # whether failures' tracebacks belong on the console (else only in the run log)

    def progress(self, description: str, total: Optional[float] = None) -> ContextManager[ProgressTask]:
        """A task for one loop of a stage."""

    def log_file(self, path: Path) -> ContextManager[None]:
        """Copy what is logged to ``img2mesh`` inside the block into ``path`` (the run's log)."""

    def section(self, title: str) -> None:
        """A new input of a batch starts."""


class _NoProgress:
    def advance(self, steps: float = 1, **fields: Any) -> None:
        pass


class SilentReporter:
    """No progress, no console. The run's log gets what the ``img2mesh`` logger lets through at the
    level the application configured (Python's default: warnings and errors)."""

    verbose = False

    @contextlib.contextmanager
    def progress(self, description: str, total: Optional[float] = None) -> Iterator[ProgressTask]:
        yield _NoProgress()

    @contextlib.contextmanager
    def log_file(self, path: Path) -> Iterator[None]:
        logger = logging.getLogger("img2mesh")
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            handler.close()

    def section(self, title: str) -> None:
        pass


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
        check_config: validates the resolved config before anything runs (when the stage is in
            the requested range); raises UsageError.
        config_values: the values of ``config_keys`` that actually change the result, when that
            depends on the config itself (a stage switched off ignores its other settings, so
            changing them must not re-run it or what reads it); default: all of ``config_keys``.
        config: the dataclass of the stage's config section (``config.<name>``), or None.
        shared_config: ``(name, dataclass)`` sections of a library the stage uses with other stages (e.g.
            ``sd2_depth`` for enhance and refine): each user declares it, the schema holds it once.
        weights: the weight files the stage uses, for ``img2mesh weights`` and ``doctor``.
        report: the stage's panel of the HTML report.
        enabled: whether the config switches the stage on (a stage switched off still runs, to
            record that, but reports and summaries show it as "off").
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
    check_config: Optional[Callable[["Config"], None]] = None
    config_values: Optional[Callable[["Config"], dict[str, Any]]] = None
    config: Optional[type] = None
    shared_config: tuple[tuple[str, type], ...] = ()
    weights: Optional[Callable[["Config"], Sequence["WeightFile"]]] = None
    report: Optional[ReportPanel] = None
    enabled: Optional[Callable[["Config"], bool]] = None


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
