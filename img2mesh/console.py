"""The command line's console: messages, progress bars, the per-run log file and result tables (Rich).

:class:`ConsoleReporter` is the runner's :class:`~img2mesh.pipeline.contract.Reporter` for the CLI,
and the one place that configures logging (a Rich handler on the ``img2mesh`` logger). Messages and
progress go to stderr, tables of results to stdout, so a script can capture the results without the
chatter. Every message also lands in ``OUT/img2mesh.log``.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

if TYPE_CHECKING:
    from img2mesh.pipeline.cluster import BatchProgress
    from img2mesh.pipeline.contract import Stage
    from img2mesh.pipeline.runner import RunResult
    from img2mesh.utils.weights import WeightFile

log = logging.getLogger("img2mesh")
# Rich draws for an 80-column terminal when stdout is a file or a pipe; there, draw as wide as a wide
# terminal. Every table cell folds what does not fit (a config key, a download source, a path) onto the
# next line instead of cutting it, so nothing is lost at any width.
PIPED_WIDTH = 160


def output_console() -> Any:
    """The Console for results on stdout: the terminal's width, or :data:`PIPED_WIDTH` when piped."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)


class BarTask:
    """A progress bar's task (a :class:`~img2mesh.pipeline.contract.ProgressTask`)."""

    def __init__(self, progress: Any = None, task_id: Any = None) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, steps: float = 1, **fields: Any) -> None:
        """Move the bar on by ``steps``; ``fields`` (e.g. ``loss=0.12``) are shown beside it."""
        if self._progress is not None:
            status = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            self._progress.update(self._task_id, advance=steps, status=status)


class ConsoleReporter:
    """Owns the Rich consoles, logging handlers and progress bars of one command."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        from rich.console import Console

        self.quiet = quiet
        self.verbose = verbose
        self.err = Console(stderr=True)
        self.out = output_console()
        self._setup_logging()

    def _setup_logging(self) -> None:
        from rich.logging import RichHandler

        log.handlers = [h for h in log.handlers if not isinstance(h, RichHandler)]
        handler = RichHandler(console=self.err, show_time=False, show_path=False, markup=False,
                              rich_tracebacks=False)
        handler.setLevel(logging.WARNING if self.quiet else logging.DEBUG if self.verbose else logging.INFO)
        # Records marked file_only (a failure the CLI reports itself, as one line) skip the console.
        handler.addFilter(lambda record: not getattr(record, "file_only", False))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        log.propagate = False

    @contextmanager
    def log_file(self, path: Path) -> Iterator[None]:
        """Append everything logged inside the block to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
        handler.setLevel(logging.DEBUG)
        log.addHandler(handler)
        try:
            yield
        finally:
            log.removeHandler(handler)
            handler.close()

    @contextmanager
    def progress(self, description: str, total: Optional[float] = None) -> Iterator[BarTask]:
        """A progress bar for one loop (hidden with --quiet); its duration is logged."""
        start = time.perf_counter()
        if self.quiet:
            yield BarTask()
        else:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
            with Progress(*columns, console=self.err, transient=True) as bar:
                yield BarTask(bar, bar.add_task(description, total=total, status=""))
        log.debug("%s: %.1f s", description, time.perf_counter() - start)

    def section(self, title: str) -> None:
        """A rule with the title (one per input of a batch; none with --quiet)."""
        from rich.markup import escape

        if not self.quiet:
            self.err.rule(escape(title), style="dim")

    @contextmanager
    def batch_display(self) -> Iterator[Optional[Callable[["BatchProgress"], None]]]:
        """A live table of a Ray batch (inputs done/running/failed, each worker's stage); None with --quiet."""
        if self.quiet:
            yield None
            return
        from rich.live import Live

        with Live(console=self.err, refresh_per_second=2, transient=True) as live:
            yield lambda progress: live.update(batch_progress_table(progress))


# Tables the CLI prints. Built here so the CLI stays a thin layer of parsing and printing.

_STATUS_STYLE = {"done": "green", "skipped": "cyan", "kept": "cyan", "failed": "red",
                 "interrupted": "yellow", "not run": "dim", "off": "dim"}


def titled_table(title: str, columns: tuple[str, ...]) -> Any:
    """A Rich table with its title on the left and these column headers (every CLI table)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def stage_table(result: "RunResult") -> Any:
    """Stage, status, time and output of one input's run."""
    from rich.markup import escape

    table = titled_table(escape(f"{result.image} -> {result.run_dir}"), ("stage", "status", "time", "output"))
    for o in result.outcomes:
        style = _STATUS_STYLE.get(o.status, "")
        shown = o.error if o.error else ", ".join(o.outputs) or (f"{o.stage}/" if o.status in ("done", "skipped") else "")
        table.add_row(o.stage, f"[{style}]{o.status}[/]", f"{o.seconds:.1f} s" if o.seconds else "", escape(shown))
    if result.error and not any(o.error for o in result.outcomes):
        table.add_row("-", "[red]failed[/]", "", escape(result.error))
    return table


def batch_table(results: list["RunResult"]) -> Any:
    """One line per input: status, time, and the main output or the error."""
    from rich.markup import escape

    ok = sum(r.ok for r in results)
    table = titled_table(f"{ok} of {len(results)} inputs succeeded", ("input", "status", "time", "output"))
    for r in results:
        status = "[green]ok[/]" if r.ok else "[red]failed[/]"
        shown = r.error if r.error else str(r.run_dir / (r.main_output() or ""))
        table.add_row(escape(str(r.image)), status, f"{r.seconds:.1f} s", escape(shown))
    return table


def batch_progress_table(progress: "BatchProgress") -> Any:
    """The live view of a Ray batch: one row per worker under a title that counts the inputs."""
    title = (f"inputs: {progress.done} done · {progress.running} running · {progress.failed} failed · "
             f"{progress.queued} queued" + (f" · {progress.retried} retried" if progress.retried else ""))
    from rich.markup import escape

    table = titled_table(title, ("worker", "node / device", "input", "stage", "finished"))
    for worker in progress.workers:
        table.add_row(worker.name, escape(worker.node), escape(worker.input) if worker.input else "[dim]idle[/]",
                      worker.stage or "", str(worker.done))
    return table


def stages_table(stages: list["Stage"]) -> Any:
    """What ``img2mesh stages`` shows."""
    table = titled_table("img2mesh stages, in order",
                         ("stage", "what it does", "reads", "writes (OUT/<stage>/)", "config keys"))
    for s in stages:
        table.add_row(s.name, s.description, ", ".join(s.reads) or "the input image", describe_outputs(s.outputs),
                      ", ".join(s.config_keys))
    return table


def describe_outputs(patterns: tuple[str, ...]) -> str:
    """A stage's output patterns for people: numbered files of one folder as a range ("sample_0/00.png …
    15.png", not "00.png, 15.png", which reads as two files)."""
    import re

    names = [p.removeprefix("**/") for p in patterns]
    shown: list[str] = []
    numbered = re.compile(r"^(.*/)?(\d+)(\.\w+)$")
    i = 0
    while i < len(names):
        first = numbered.match(names[i])
        last = numbered.match(names[i + 1]) if i + 1 < len(names) else None
        if first and last and first.group(1) == last.group(1) and first.group(3) == last.group(3):
            shown.append(f"{names[i]} … {last.group(2)}{last.group(3)}")
            i += 2
        else:
            shown.append(names[i])
            i += 1
    return ", ".join(shown)


def rows_table(title: str, rows: list[tuple[str, str]]) -> Any:
    """A two-column table (doctor's sections)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold", overflow="fold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(escape(key), escape(value))
    return table


def weights_table(entries: list["WeightFile"]) -> Any:
    """What ``img2mesh weights list`` shows."""
    from rich.markup import escape

    table = titled_table("weight files", ("name", "used by", "size", "source", "local path"))
    for e in entries:
        path = e.locate()
        table.add_row(e.name, e.used_by, e.size, escape(e.source()),
                      escape(str(path)) if path else "[yellow]missing[/]")
    return table
