"""UV unwrapping with xatlas, run in a child process.

xatlas is native code that segfaults on some large meshes (e.g. a regular 200k-face sphere here;
see jpcy/xatlas#151). In a child process a crash becomes a clear error instead of killing the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from img2mesh.errors import StageError


@dataclass
class Unwrapped:
    """xatlas' result: for each new vertex the original vertex it copies, new faces, UVs in [0, 1]."""

    vertex_map: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray


def _parametrize(vertices: np.ndarray, faces: np.ndarray, resolution: int, padding: int) -> tuple:
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = resolution  # pack at the texture size so that padding is in texels
    pack.padding = padding
    atlas.generate(xatlas.ChartOptions(), pack)
    vertex_map, new_faces, uvs = atlas[0]
    return vertex_map.astype(np.int64), new_faces.astype(np.int64), uvs.astype(np.float64)


def unwrap(vertices: np.ndarray, faces: np.ndarray, resolution: int, padding: int = 4) -> Unwrapped:
    """Charts packed into a ``resolution``² atlas with ``padding`` texels between them."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        import xatlas  # noqa: F401  (fail here, in this process, with a clear message)
    except ImportError:
        raise StageError("mesh: texturing needs xatlas (pip install xatlas), or use --no-texture") from None
    # spawn, not fork: the parent holds torch's threads, which a forked child can deadlock on.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            result = pool.submit(_parametrize, vertices, faces, resolution, padding).result()
        except BrokenProcessPool:
            raise StageError(f"mesh: xatlas crashed unwrapping {len(faces)} faces; lower --target-faces "
                             f"(e.g. 50000) or use --no-texture") from None
    return Unwrapped(*result)
