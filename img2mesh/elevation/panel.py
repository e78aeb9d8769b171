"""The elevation stage's panel of the report: the elevation, where it came from, the error curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from img2mesh.utils.html import figure, load_json, section, text


def panel(run_dir: Path, records: Mapping[str, Any]) -> str:
    data = load_json(run_dir / "elevation" / "elevation.json")
    if not isinstance(data, dict):
        return ""
    words = f"{data.get('elevation_deg', '?')}° ({text(data.get('source', '?'))})"
    if data.get("fallback_reason"):
        words += f" — <span class='bad'>{text(data['fallback_reason'])}</span>"
    curve = run_dir / "elevation" / "error_curve.png"
    shown = figure(run_dir, curve, "reprojection error per elevation hypothesis") if curve.is_file() else ""
    return section("Elevation", f"<p>Input camera elevation: {words}</p><div class='row'>{shown}</div>")
