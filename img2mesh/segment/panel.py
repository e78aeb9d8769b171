"""The segment stage's panel of the report: the input and its cut-out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from img2mesh.utils.html import figure, section


def panel(run_dir: Path, records: Mapping[str, Any]) -> str:
    folder = run_dir / "segment"
    shown = [(folder / "input.png", "the input"), (folder / "rgba.png", "cut-out and mask, recentred: what SyncDreamer sees")]
    figures = [figure(run_dir, p, c, extra=" checker" if p.name == "rgba.png" else "") for p, c in shown if p.is_file()]
    return section("Input", "<div class='row'>" + "".join(figures) + "</div>" if figures else "")
