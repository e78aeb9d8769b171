"""The enhance stage's panel of the report: each enhanced sample set, before (top) and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from img2mesh.utils.html import figure, section


def panel(run_dir: Path, records: Mapping[str, Any]) -> str:
    strips = sorted((run_dir / "enhance").glob("sample_*/strip.png"))
    shown = [figure(run_dir, strip, f"{strip.parent.name}: generated (top), enhanced (bottom)", "strip")
             for strip in strips]
    return section("Enhanced views", "".join(shown))
