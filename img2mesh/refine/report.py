"""The refine stage's panel of the report: the fixed cameras before and after the texture refinement."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from img2mesh.utils.html import figure, section, text


def panel(run_dir: Path, records: Mapping[str, Any]) -> str:
    images = sorted((run_dir / "refine").glob("**/before_after.png"))
    info = records.get("refine", {}).get("info", {})
    facts = ""
    if isinstance(info.get("loss_first10"), (int, float)) and isinstance(info.get("loss_last10"), (int, float)):
        facts = (f"<p>{text(info.get('iterations'))} iterations at {text(info.get('render_size'))}²: loss "
                 f"{info['loss_first10']:.4g} (first ten) → {info['loss_last10']:.4g} (last ten)</p>")
    shown = [figure(run_dir, image, f"{image.parent.name if image.parent.name != 'refine' else 'texture'}: "
                                    "before (top) and after (bottom) refinement", "strip") for image in images]
    return section("Refined texture", facts + "".join(shown))
