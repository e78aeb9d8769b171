"""Quad remeshing for artists: Instant Meshes' field-aligned pure-quad mesh, with its own texture.

Instant Meshes (Jakob et al. 2015) through ``pyinstantmeshes`` (BSD-3-Clause; wheels for Linux,
macOS arm64 and Windows, Python 3.11+). Its array function hands quads back split into triangles,
so the file function is used and its OBJ read back with the quads intact. The library prints its
progress on the C level's stdout: that goes to the debug log instead, so that ``--json`` keeps
stdout clean.

glTF has no quads, so the quad mesh is written as ``mesh_quad.obj`` only. Its texture is re-baked
on the new surface: every quad gets a square cell of a grid atlas (quads from Instant Meshes are
near-uniform in size, so equal cells waste little), its corners on the centres of the cell's
corner texels, so that bilinear filtering inside a quad only ever reads that quad's texels.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from img2mesh.errors import StageError

log = logging.getLogger("img2mesh")
ColorFn = Callable[[np.ndarray], np.ndarray]
MIN_CELL = 8  # texels per quad side at least; the atlas grows beyond mesh.texture_size to keep it
MAX_ATLAS = 8192


@dataclass
class QuadMesh:
    """Vertices (V,3) and quads (Q,4), corners in order around each face."""

    vertices: np.ndarray
    quads: np.ndarray


@contextlib.contextmanager
def _stdout_to(path: Path) -> Iterator[None]:
    """Send file descriptor 1 (what native code prints) to ``path`` for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def read_obj_polygons(path: Path) -> tuple[np.ndarray, list[list[int]]]:
    """Vertices and 0-based polygons of an OBJ (``f`` entries may carry ``/vt/vn``)."""
    vertices, faces = [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            vertices.append([float(x) for x in parts[1:4]])
        elif parts[0] == "f":
            faces.append([int(p.split("/")[0]) - 1 for p in parts[1:]])
    return np.asarray(vertices, dtype=np.float64).reshape(-1, 3), faces


QUAD_PACKAGE_HINT = ("--remesh quad needs pyinstantmeshes (pip install pyinstantmeshes; wheels for Linux, "
                     "macOS arm64 and Windows, Python 3.11+)")


def quad_remesher_status() -> str:
    """pyinstantmeshes' version, or why --remesh quad cannot run here (for ``doctor``)."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("pyinstantmeshes")
    except importlib.metadata.PackageNotFoundError:
        return f"not installed ({QUAD_PACKAGE_HINT})"
    try:
        import pyinstantmeshes  # noqa: F401
    except ImportError as exc:
        return f"{version}, fails to import ({exc})"
    return version


def check_quad_remesher() -> None:
    """A UsageError before any work when --remesh quad's package is missing."""
    from img2mesh.errors import UsageError

    try:
        import pyinstantmeshes  # noqa: F401
    except ImportError:
        raise UsageError(QUAD_PACKAGE_HINT) from None


def quad_remesh(vertices: np.ndarray, faces: np.ndarray, target_quads: int) -> QuadMesh:
    """A pure-quad mesh of about ``target_quads`` faces following the surface's principal directions."""
    try:
        import pyinstantmeshes
    except ImportError:
        raise StageError(f"mesh: {QUAD_PACKAGE_HINT}") from None
    # Pure-quad output subdivides each face of the quad-dominant mesh into four: ask for a quarter.
    goal = max(8, target_quads // 4)
    with tempfile.TemporaryDirectory(prefix="img2mesh-remesh-") as folder:
        source, target, printed = Path(folder) / "in.obj", Path(folder) / "out.obj", Path(folder) / "log.txt"
        lines = [f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in vertices]
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
        source.write_text("\n".join(lines) + "\n")
        with _stdout_to(printed):
            pyinstantmeshes.remesh_file(str(source), str(target), target_face_count=goal, pure_quad=True,
                                        deterministic=True)
        log.debug("instant meshes: %s", printed.read_text(errors="replace")[-2000:])
        if not target.is_file():
            raise StageError("mesh: quad remeshing wrote no mesh (see img2mesh.log)")
        new_vertices, polygons = read_obj_polygons(target)
    quads = [p for p in polygons if len(p) == 4]
    if not quads:
        raise StageError(f"mesh: quad remeshing of {len(faces)} faces gave no quads")
    if len(quads) < len(polygons):
        log.warning("mesh: quad remeshing left %d non-quad faces out", len(polygons) - len(quads))
    return QuadMesh(new_vertices, np.asarray(quads, dtype=np.int64))


def quad_points(corners: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Bilinear points of quads (N,4,3) at parameters (s, t): corner 0 at (0,0), 1 (1,0), 2 (1,1), 3 (0,1)."""
    s, t = s[:, None], t[:, None]
    return ((1 - s) * (1 - t) * corners[:, 0] + s * (1 - t) * corners[:, 1]
            + s * t * corners[:, 2] + (1 - s) * t * corners[:, 3])


@dataclass
class QuadAtlas:
    """A grid of square cells, one per quad: the texture side, the cell side, corner UVs (Q,4,2)."""

    size: int
    cell: int
    uvs: np.ndarray


def quad_atlas(count: int, texture_size: int) -> QuadAtlas:
    """Cells of at least ``MIN_CELL`` texels in a square atlas of ``texture_size`` or more."""
    grid = max(1, math.ceil(math.sqrt(count)))
    size = min(MAX_ATLAS, max(texture_size, grid * MIN_CELL))
    cell = size // grid
    if cell < 2:
        raise StageError(f"mesh: {count} quads do not fit a {MAX_ATLAS}² texture; lower --target-faces")
    index = np.arange(count)
    x0, y0 = (index % grid) * cell, (index // grid) * cell
    lo, hi = 0.5, cell - 0.5  # corner texel centres, in texels from the cell's corner
    xs = np.stack([x0 + lo, x0 + hi, x0 + hi, x0 + lo], 1)
    ys = np.stack([y0 + lo, y0 + lo, y0 + hi, y0 + hi], 1)
    uvs = np.stack([xs / size, 1.0 - ys / size], -1)  # v up, row 0 at the top
    return QuadAtlas(size, cell, uvs)


def bake_quads(mesh: QuadMesh, atlas: QuadAtlas, color_fn: ColorFn) -> np.ndarray:
    """The atlas texture (uint8 RGB): each texel of a cell coloured at its quad's bilinear point."""
    grid = atlas.size // atlas.cell
    count = len(mesh.quads)
    rows, cols = np.mgrid[0:grid * atlas.cell, 0:grid * atlas.cell]
    quad = (rows // atlas.cell) * grid + cols // atlas.cell
    inside = quad < count
    steps = max(atlas.cell - 1, 1)
    s = (cols % atlas.cell)[inside] / steps
    t = (rows % atlas.cell)[inside] / steps
    points = quad_points(mesh.vertices[mesh.quads[quad[inside]]], s, t)
    image = np.full((atlas.size, atlas.size, 3), 255, np.uint8)
    region = image[:grid * atlas.cell, :grid * atlas.cell]
    region[inside] = (np.asarray(color_fn(points)) * 255).round().clip(0, 255).astype(np.uint8)
    return image


def write_quad_obj(mesh: QuadMesh, path: Path, atlas: QuadAtlas | None = None,
                   texture: np.ndarray | None = None) -> list[Path]:
    """``mesh_quad.obj`` with ``f a/ta b/tb c/tc d/td`` quads (+ ``.mtl`` and the texture when given)."""
    from img2mesh.mesh.export import white_mtl
    from img2mesh.utils.files import atomic_save_image, atomic_write_text

    path = Path(path)
    textured = atlas is not None and texture is not None
    lines = ["# img2mesh quad remesh (Instant Meshes)"]
    written = []
    if textured:
        mtl, image = path.with_suffix(".mtl"), path.with_name(f"{path.stem}_albedo.png")
        atomic_save_image(image, texture)
        atomic_write_text(mtl, white_mtl(image.stem, image.name))
        lines += [f"mtllib {mtl.name}", f"usemtl {image.stem}"]
        written += [mtl, image]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    if textured:
        lines += [f"vt {u:.7f} {v:.7f}" for u, v in atlas.uvs.reshape(-1, 2)]
        lines += [" ".join(["f"] + [f"{v + 1}/{4 * q + k + 1}" for k, v in enumerate(quad)])
                  for q, quad in enumerate(mesh.quads)]
    else:
        lines += [" ".join(["f"] + [str(v + 1) for v in quad]) for quad in mesh.quads]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return [path, *written]
