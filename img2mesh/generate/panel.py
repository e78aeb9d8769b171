"""The generate stage's panel of the report: every sample set's views, its score, which one was
reconstructed, and the feedback steps' renders when feedback ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from img2mesh.generate.sets import SCORES_FILE, set_name
from img2mesh.utils.html import figure, load_json, rel, section, text


def reconstructed_samples(records: Mapping[str, Any]) -> set[str]:
    """The ``sample_K`` folders the reconstruct stage used (from its manifest record)."""
    info = records.get("reconstruct", {}).get("info", {})
    chosen = info.get("samples") if info.get("select") == "all" else [info.get("sample")]
    return {set_name(k) for k in chosen or [] if k is not None}


def panel(run_dir: Path, records: Mapping[str, Any]) -> str:
    folders = sorted(p for p in (run_dir / "generate").glob("sample_*") if p.is_dir())
    if not folders:
        return ""
    reconstructed = reconstructed_samples(records)
    scores = load_json(run_dir / "generate" / SCORES_FILE) or {}
    by_sample = {set_name(s.get("sample")): s for s in scores.get("samples", []) if isinstance(s, dict)}
    parts = ["<div class='row'>"]
    for folder in folders:
        image = next((folder / n for n in ("grid.png", "strip.png") if (folder / n).is_file()), None)
        score = by_sample.get(folder.name, {})
        facts = [f"score {score['score']:.3f}"] if isinstance(score.get("score"), (int, float)) else []
        chosen = folder.name in reconstructed
        facts.append("<span class='ok'>reconstructed</span>" if chosen else "<span class='muted'>not reconstructed</span>")
        caption = f"{folder.name}: " + ", ".join(facts)
        if image is not None:
            css = "views" if image.name == "grid.png" else "strip"
            parts.append(f"<figure><img class='{css}{' chosen' if chosen else ''}' src='{text(rel(image, run_dir))}' "
                         f"alt='{text(folder.name)}'><figcaption>{caption}</figcaption></figure>")
    parts.append("</div>")
    for folder in folders:
        for step in sorted((folder / "feedback").glob("step_*.png")):
            parts.append(figure(run_dir, step, f"{folder.name}: feedback renders at DDIM step {step.stem[5:]}", "strip"))
    return section("Generated views", "".join(parts))
