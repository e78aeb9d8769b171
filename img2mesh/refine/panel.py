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
    facts += diagnostics_line(info)
    shown = [figure(run_dir, image, f"{image.parent.name if image.parent.name != 'refine' else 'texture'}: "
                                    "before (top) and after (bottom) refinement", "strip") for image in images]
    return section("Refined texture", facts + "".join(shown))


def diagnostics_line(info: Mapping[str, Any]) -> str:
    """The weight-free checks of ``refine/diagnostics.py`` in one line (what a reader can verify)."""
    parts = []
    share = info.get("texels_with_gradient_per_step")
    if isinstance(share, (int, float)):
        parts.append(f"{100 * share:.0f} % of the atlas's texels get a gradient per step "
                     f"(supersampling ×{text(info.get('supersample'))})")
    before, after = info.get("before") or {}, info.get("after") or {}
    if isinstance(before.get("photo_silhouette_iou"), (int, float)):
        parts.append(f"mesh vs photo silhouette IoU {before['photo_silhouette_iou']:.3f}")
    if isinstance(before.get("latent_error_inside"), (int, float)) and isinstance(after.get("latent_error_inside"),
                                                                                   (int, float)):
        parts.append(f"|z₀ − x̃₀| inside {before['latent_error_inside']:.3g} → {after['latent_error_inside']:.3g}, "
                     f"along the silhouette {before['latent_error_band']:.3g} → {after['latent_error_band']:.3g}")
    return f"<p class='muted'>{text('; '.join(parts))}</p>" if parts else ""
