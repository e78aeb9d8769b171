"""Writing meshes in the frame viewers expect: glTF's +Y up, the input view looking along +Z.

The reconstruction world has +z up and the view-0 (input) camera on +x. Exports use
(X, Y, Z) = (y, z, x) of the world: a proper rotation, same scale, so Blender and web viewers show
the object upright and facing the viewer. ``img2mesh eval`` undoes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from img2mesh.utils.files import atomic_write_bytes

# Rows map world (x, y, z) to export (X, Y, Z) = (y, z, x).
WORLD_TO_EXPORT = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
FORMATS = ("glb", "ply", "obj")


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


def export_mesh(mesh: "trimesh.Trimesh", folder: Path, formats: list[str]) -> list[Path]:
    """Write ``mesh.<fmt>`` for each requested format (in the export frame), atomically."""
    exported = to_export_frame(mesh)
    written = []
    for fmt in formats:
        path = Path(folder) / f"mesh.{fmt}"
        data = exported.export(file_type=fmt)
        atomic_write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8"))
        written.append(path)
    return written
