"""The mesh stage's panel of the report: turntable or preview, and the files, per mesh."""

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


def panel(run_dir: Path, records: Mapping[str, Any]) -> str:
    parts = []
    for folder in mesh_folders(run_dir):
        title = "Surface" if folder.name == "mesh" else f"Surface of {folder.name}"
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in MESH_FILES]
        listing = "".join(f"<li><a href='{text(rel(p, run_dir))}'>{text(p.name)}</a> <span class='muted'>"
                          f"{file_size(p)}</span>{' — quads, for retopology' if p.name == 'mesh_quad.obj' else ''}</li>"
                          for p in files)
        parts.append(f"<h2>{text(title)}</h2>{_media(run_dir, folder)}<ul class='files'>{listing}</ul>")
    return "".join(parts)
