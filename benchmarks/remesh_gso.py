"""Quad remeshing (``--remesh quad``) on reconstructions of the shared Google Scanned Objects.

For each run folder (``img2mesh reconstruct ../shared/gso/NAME -o RUN``) and each quad budget: the
quads Instant Meshes makes from the exported ``mesh.glb``, the seconds it takes, and the Chamfer
distance between the quad surface and the mesh it came from (the papers' metric: depth-map points
of the 16 cameras, in the world frame; for scale, the GSO reconstructions themselves score
0.007-0.03 against the ground truth). Texture baking is not timed here: it is one colour-field query
per texel, like the triangle texture's.

    python benchmarks/remesh_gso.py RUN_DIR... [--budgets 2000 5000 20000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from img2mesh.evaluation.metrics import chamfer_distance, surface_points
from img2mesh.mesh.export import load_mesh, to_world_frame
from img2mesh.mesh.remesh import quad_remesh


def quad_surface(vertices: np.ndarray, quads: np.ndarray):
    """The quad mesh as triangles (each quad split along one diagonal), for the metric's rasteriser."""
    import trimesh

    triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return trimesh.Trimesh(vertices, triangles, process=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--budgets", nargs="+", type=int, default=[2000, 5000, 20000])
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        mesh = to_world_frame(load_mesh(run / "mesh" / "mesh.glb"))
        # The GLB splits vertices along UV seams; joined again, the surface is the closed one the
        # mesh stage remeshes (seams left open become boundaries the quads have to bridge).
        mesh.merge_vertices(merge_tex=True, merge_norm=True)
        reference = surface_points(mesh)
        for budget in args.budgets:
            start = time.perf_counter()
            quads = quad_remesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), budget)
            seconds = time.perf_counter() - start
            cd = chamfer_distance(reference, surface_points(quad_surface(quads.vertices, quads.quads)))
            rows.append((run.name, len(mesh.faces), budget, len(quads.quads), seconds, cd))
            print(f"{run.name}: {budget} -> {len(quads.quads)} quads in {seconds:.2f} s, CD {cd:.5f}", flush=True)
    print("\n| object | triangles in | budget | quads out | seconds | CD quad vs triangle mesh |")
    print("|---|---|---|---|---|---|")
    for name, faces, budget, count, seconds, cd in rows:
        print(f"| {name} | {faces} | {budget} | {count} | {seconds:.2f} | {cd:.5f} |")
    for budget in args.budgets:
        chosen = [r for r in rows if r[2] == budget]
        print(f"| mean | | {budget} | {np.mean([r[3] for r in chosen]):.0f} | {np.mean([r[4] for r in chosen]):.2f} "
              f"| {np.mean([r[5] for r in chosen]):.5f} |")


if __name__ == "__main__":
    main()
