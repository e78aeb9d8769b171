"""The mesh stage's panel of the report, per mesh: turntable or preview, the photo beside the textured
mesh seen from the (registered) photo camera, the texture atlas, how the texture was made, the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from img2mesh.utils.html import figure, file_size, rel, text

MESH_FILES = (".glb", ".obj", ".ply")


def mesh_folders(run_dir: Path) -> list[Path]:
    """``OUT/mesh`` or, with ``--select all``, its ``sample_K`` folders: where each mesh is."""
    mesh = run_dir / "mesh"
    return [f for f in [mesh, *sorted(mesh.glob("sample_*"))] if (f / "mesh.glb").is_file()]


def _media(run_dir: Path, folder: Path) -> str:
    shown = []
    for name in ("turntable.mp4", "turntable.gif", "preview.png"):
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".mp4"):
            shown.append(f"<figure><video src='{text(rel(path, run_dir))}' autoplay loop muted playsinline "
                         f"width='360'></video><figcaption>turntable</figcaption></figure>")
        elif not (name.endswith(".gif") and (folder / "turntable.mp4").is_file()):
            shown.append(figure(run_dir, path, name.split(".")[0]))
    return "<div class='row'>" + "".join(shown) + "</div>"


def _texture(run_dir: Path, folder: Path, facts: Mapping[str, Any]) -> str:
    """The photo beside the mesh at the photo camera, the atlas, and one line on where the colour came from."""
    shown = []
    if (folder / "photo_compare.png").is_file():
        shown.append(figure(run_dir, folder / "photo_compare.png", "the photo (left) and the textured mesh from the "
                                                                   "registered photo camera (right)", "views"))
    if (folder / "mesh_albedo.png").is_file():
        shown.append(figure(run_dir, folder / "mesh_albedo.png", "the texture atlas (mesh_albedo.png)"))
    line = []
    if isinstance(facts.get("bake_seen_by_views"), (int, float)):
        line.append(f"colour from the {text(facts.get('bake', 'views'))}: {100 * facts['bake_seen_by_views']:.0f} % of "
                    f"the texels seen by a view, {100 * facts.get('bake_field_only', 0):.0f} % by none (the field's "
                    f"colour), {100 * facts.get('bake_photo', 0):.0f} % from the photo")
    if isinstance(facts.get("photo_iou_after"), (int, float)):
        line.append(f"photo registered: silhouette IoU {facts['photo_iou_before']:.3f} → {facts['photo_iou_after']:.3f}")
    caption = f"<p class='muted'>{'; '.join(line)}</p>" if line else ""
    return ("<div class='row'>" + "".join(shown) + "</div>" if shown else "") + caption


def panel(run_dir: Path, records: Mapping[str, Any]) -> str:
    info = records.get("mesh", {}).get("info", {}) or {}
    parts = []
    for folder in mesh_folders(run_dir):
        facts = info if folder.name == "mesh" else (info.get("per_sample") or {}).get(folder.name, {})
        title = "Surface" if folder.name == "mesh" else f"Surface of {folder.name}"
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in MESH_FILES]
        listing = "".join(f"<li><a href='{text(rel(p, run_dir))}'>{text(p.name)}</a> <span class='muted'>"
                          f"{file_size(p)}</span>{' — quads, for retopology' if p.name == 'mesh_quad.obj' else ''}</li>"
                          for p in files)
        parts.append(f"<h2>{text(title)}</h2>{_media(run_dir, folder)}{_texture(run_dir, folder, facts)}"
                     f"<ul class='files'>{listing}</ul>")
    return "".join(parts)
