"""Writing meshes in the frame viewers expect (glTF's +Y up, the input view looking along +Z), and reading
any mesh file back.

The reconstruction world has +z up and the view-0 (input) camera on +x. Exports use
(X, Y, Z) = (y, z, x) of the world: a proper rotation, same scale, so Blender and web viewers show
the object upright and facing the viewer. ``img2mesh eval`` undoes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from img2mesh.utils.files import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    import trimesh

# Rows map world (x, y, z) to export (X, Y, Z) = (y, z, x).
WORLD_TO_EXPORT = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def to_export_frame(mesh: "trimesh.Trimesh") -> "trimesh.Trimesh":
    transform = np.eye(4)
    transform[:3, :3] = WORLD_TO_EXPORT
    out = mesh.copy()
    out.apply_transform(transform)
    return out


def to_world_frame(mesh: "trimesh.Trimesh") -> "trimesh.Trimesh":
    transform = np.eye(4)
    transform[:3, :3] = WORLD_TO_EXPORT.T
    out = mesh.copy()
    out.apply_transform(transform)
    return out


def export_mesh(mesh: "trimesh.Trimesh", folder: Path, formats: list[str],
                textured: Optional["trimesh.Trimesh"] = None) -> list[Path]:
    """Write ``mesh.<fmt>`` for each requested format (in the export frame), atomically.

    With ``textured`` (a UV-mapped copy), GLB and OBJ carry its texture (OBJ as ``mesh.mtl`` +
    ``mesh_albedo.png``); PLY always carries ``mesh``'s vertex colours.
    """
    written = []
    for fmt in formats:
        source = textured if textured is not None and fmt != "ply" else mesh
        exported = to_export_frame(source)
        path = Path(folder) / f"mesh.{fmt}"
        if fmt == "obj" and textured is not None:
            written += _write_textured_obj(exported, path)
            continue
        data = exported.export(file_type=fmt)
        atomic_write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8"))
        written.append(path)
    return written


def white_mtl(material: str, image_name: str) -> str:
    """An OBJ material whose colours are white, so that viewers which multiply Kd by the texture show
    the texture as baked."""
    return f"newmtl {material}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {image_name}\n"


def _write_textured_obj(mesh: "trimesh.Trimesh", path: Path) -> list[Path]:
    """``mesh.obj``, ``mesh.mtl`` and the texture image; the material's colours are white so that
    viewers which multiply Kd by the texture show the texture as baked."""
    from trimesh.exchange.obj import export_obj

    mtl = path.with_suffix(".mtl")
    text, files = export_obj(mesh, include_normals=False, include_color=False, return_texture=True,
                             mtl_name=mtl.name)
    images = [name for name in files if name.endswith(".png")]
    material = Path(images[0]).stem
    atomic_write_text(mtl, white_mtl(material, images[0]))
    atomic_write_bytes(path.with_name(images[0]), files[images[0]])
    atomic_write_text(path, text)
    return [path, mtl, path.with_name(images[0])]


def load_mesh(path: "Path") -> "trimesh.Trimesh":
    """Any mesh file trimesh reads, merged into one mesh; a UsageError when it cannot be read."""
    import trimesh

    from img2mesh.errors import UsageError

    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for bad files
        raise UsageError(f"cannot read mesh {path}: {exc}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise UsageError(f"{path} holds no triangles")
    return mesh
