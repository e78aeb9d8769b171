"""The HTML pages a run leaves for people: ``OUT/report.html`` per input, ``OUT/index.html`` per batch.

Both are refreshed after every run (by the application, once the stages are done, so the page shows
every stage's time, the mesh stage's included, and what a failed or ``--until`` run left). Writing
them never fails a run: a problem is logged as a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from img2mesh.pipeline.contract import Stage
    from img2mesh.pipeline.runner import RunResult

log = logging.getLogger("img2mesh")


def _owns(result: "RunResult") -> bool:
    """True when the run folder holds this input's results and this run wrote them: an input refused
    for another's folder, or by the lock of a live run, must not touch that run's page."""
    from img2mesh.pipeline.summary import read_manifest

    if not result.run_dir.is_dir() or result.category == "locked":
        return False
    recorded = (read_manifest(result.run_dir).data.get("input") or {}).get("path")
    return recorded == str(Path(result.image).resolve())


def refresh_report(result: "RunResult", stages: Sequence["Stage"]) -> None:
    """Write the input's ``report.html`` (the ``stages``' panels) when its run folder is its own."""
    from img2mesh.report.page import write_report

    if not _owns(result):
        return
    try:
        path = write_report(result.run_dir, stages, result.error)
    except (OSError, ValueError) as exc:
        log.warning("report: could not write %s (%s)", result.run_dir / "report.html", exc)
        return
    log.info("report: %s", path)


def refresh_index(out: Path, results: list["RunResult"]) -> None:
    """Write the batch's ``OUT/index.html``."""
    from img2mesh.report.index import write_index

    try:
        path = write_index(out, results)
    except (OSError, ValueError) as exc:
        log.warning("report: could not write %s (%s)", Path(out) / "index.html", exc)
        return
    log.info("report: %s", path)
