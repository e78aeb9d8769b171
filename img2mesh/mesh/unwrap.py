"""UV unwrapping with xatlas, run in a child process.

xatlas is native code that segfaults on some large meshes (e.g. a regular 200k-face sphere here;
see jpcy/xatlas#151). In a child process a crash becomes a clear error instead of killing the run.
The child is ``python -m img2mesh.mesh.unwrap IN.npz OUT.npz``, not multiprocessing: a spawned
multiprocessing child re-imports the caller's main script, which breaks scripts without a
``__main__`` guard, and a forked one can inherit locks held by torch's threads.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from img2mesh.errors import StageError


@dataclass
class Unwrapped:
    """xatlas' result: for each new vertex the original vertex it copies, new faces, UVs in [0, 1]."""

    vertex_map: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray


def parametrize(vertices: np.ndarray, faces: np.ndarray, resolution: int, padding: int) -> Unwrapped:
    """xatlas in this process (what the child runs)."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = resolution  # pack for this texture size, so that padding is in its texels
    pack.padding = padding
    pack.bruteForce = True  # tighter packing (chart area 0.38 -> 0.42 of the atlas on a GSO mesh), ~1 s
    atlas.generate(xatlas.ChartOptions(), pack)
    vertex_map, new_faces, uvs = atlas[0]
    return Unwrapped(vertex_map.astype(np.int64), new_faces.astype(np.int64), uvs.astype(np.float64))


def worker_command(source: Path, target: Path) -> list[str]:
    return [sys.executable, "-m", "img2mesh.mesh.unwrap", str(source), str(target)]


def unwrap(vertices: np.ndarray, faces: np.ndarray, resolution: int, padding: int = 2) -> Unwrapped:
    """Charts packed into a square atlas for a ``resolution``² texture, ``padding`` texels apart."""
    try:
        import xatlas  # noqa: F401  (fail here, in this process, with a clear message)
    except ImportError:
        raise StageError("mesh: texturing needs xatlas (pip install xatlas), or use --no-texture") from None
    with tempfile.TemporaryDirectory(prefix="img2mesh-unwrap-") as folder:
        source, target = Path(folder) / "mesh.npz", Path(folder) / "uv.npz"
        np.savez(source, vertices=vertices, faces=faces, resolution=resolution, padding=padding)
        done = subprocess.run(worker_command(source, target), capture_output=True, text=True)
        if done.returncode != 0 or not target.is_file():
            if done.returncode < 0:
                why = f"crashed ({signal.Signals(-done.returncode).name})"
            else:
                lines = done.stderr.strip().splitlines()
                why = f"failed ({lines[-1] if lines else f'exit {done.returncode}'})"
            raise StageError(f"mesh: xatlas {why} unwrapping {len(faces)} faces; lower --target-faces "
                             f"(e.g. 50000) or use --no-texture")
        with np.load(target) as result:
            return Unwrapped(result["vertex_map"], result["faces"], result["uvs"])


def _main(source: str, target: str) -> None:
    with np.load(source) as data:
        result = parametrize(data["vertices"], data["faces"], int(data["resolution"]), int(data["padding"]))
    np.savez(target, vertex_map=result.vertex_map, faces=result.faces, uvs=result.uvs)


if __name__ == "__main__":
    _main(*sys.argv[1:3])
