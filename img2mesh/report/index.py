"""``OUT/index.html`` of a batch: every input with a thumbnail, its status and a link to its report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from img2mesh.report.page import REPORT_NAME, html_page
from img2mesh.utils.files import atomic_write_text
from img2mesh.utils.html import text

if TYPE_CHECKING:
    from img2mesh.pipeline.runner import RunResult

INDEX_NAME = "index.html"
THUMBNAILS = ("segment/rgba.png", "segment/input.png")  # after a published preview: the first that exists


def _thumbnail(run_dir: Path) -> Path | None:
    candidates = [run_dir / "preview.png", *sorted(run_dir.glob("sample_*/preview.png"))]
    candidates += [run_dir / name for name in THUMBNAILS]
    return next((p for p in candidates if p.is_file()), None)


def write_index(out: Path, results: list["RunResult"]) -> Path:
    """Write ``out/index.html`` linking each input's report; failed inputs show their one-line error."""
    out = Path(out)
    rows = []
    for result in results:
        run_dir = Path(result.run_dir)
        relative = run_dir.relative_to(out).as_posix() if run_dir.is_relative_to(out) else run_dir.as_posix()
        thumb = _thumbnail(run_dir) if run_dir.is_dir() else None
        image = (f"<img class='thumb checker' src='{text(relative + '/' + thumb.relative_to(run_dir).as_posix())}' "
                 f"alt='{text(result.image.name)}'>" if thumb else "")
        report = run_dir / REPORT_NAME
        name = text(result.image.name)
        link = f"<a href='{text(relative + '/' + REPORT_NAME)}'>{name}</a>" if report.is_file() else name
        status = "<span class='ok'>ok</span>" if result.ok else f"<span class='bad'>failed: {text(result.error)}</span>"
        rows.append(f"<tr><td>{image}</td><td>{link}</td><td>{status}</td><td>{result.seconds:.1f} s</td></tr>")
    ok = sum(r.ok for r in results)
    body = [f"<h1>img2mesh batch: {ok} of {len(results)} inputs succeeded</h1>",
            "<table><tr><th></th><th>input</th><th>status</th><th>time</th></tr>", *rows, "</table>"]
    path = out / INDEX_NAME
    atomic_write_text(path, html_page("img2mesh batch", body, scripts=()))
    return path
