"""The reconstruct stage's panel of the report: how the field was trained (start, masks, loss)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from img2mesh.utils.html import section, text

FACTS = (("field", "field"), ("backend", "encoding"), ("start", "start"), ("mask_source", "masks"),
         ("views", "views"), ("view_size", "view size"), ("steps", "steps"), ("loss_first", "first loss"),
         ("loss_last", "last loss"), ("inv_s", "sharpness (inv_s)"))


def _rows(info: Mapping[str, Any]) -> str:
    rows = []
    for key, label in FACTS:
        if info.get(key) is None:
            continue
        value = info[key]
        shown = f"{value:.4g}" if isinstance(value, float) else " x ".join(map(str, value)) if isinstance(value, list) \
            else value
        rows.append(f"<tr><td>{text(label)}</td><td>{text(shown)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>" if rows else ""


def panel(run_dir: Path, records: Mapping[str, Any]) -> str:
    info = records.get("reconstruct", {}).get("info", {})
    per_set = info.get("per_sample")  # --select all: one field per sample set, keyed sample_K
    if isinstance(per_set, dict):
        body = "".join(f"<p>{text(k)}</p>{_rows(v)}" for k, v in per_set.items() if isinstance(v, dict))
    else:
        body = _rows(info)
    return section("Reconstruction", body)
