"""Marching-cubes resolution per preset: time, faces before decimation and Chamfer distance of the
same trained field extracted at several grid sizes.

Reads run folders kept by ``benchmarks/reconstruct_gso.py --keep DIR`` (``DIR/<field>/<NAME>``: the
reconstruct stage's field of a shared GSO object) and, per resolution, extracts the zero level set
as the mesh stage does (SDF grid, marching cubes, components above ``mesh.min_component``), times it,
and scores the raw mesh against the ground truth with the papers' metric (no decimation, so the
resolution alone is compared).

    python benchmarks/mc_resolution.py /tmp/gso-runs/mlp/* [--resolutions 128 256 512]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from img2mesh.evaluation.gso import GSO_ANGLES_DEG, normalise_ground_truth
from img2mesh.evaluation.metrics import evaluate
from img2mesh.mesh.config import MeshConfig
from img2mesh.mesh.export import load_mesh
from img2mesh.mesh.extract import keep_components, marching_cubes, sdf_grid
from img2mesh.pipeline.config import SceneConfig
from img2mesh.reconstruct.storage import load_field

GSO = Path(__file__).resolve().parents[2] / "shared" / "gso"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[128, 256, 512])
    args = parser.parse_args()
    bound, min_component = SceneConfig().bound, MeshConfig().min_component
    rows = []
    print(f"{'object':12s} {'res':>5s} {'seconds':>8s} {'faces':>9s} {'CD':>8s} {'IoU':>6s}")
    for run in args.runs:
        name = run.name
        gt = normalise_ground_truth(load_mesh(GSO / name / "model.obj"), GSO_ANGLES_DEG[name])
        field = load_field(run / "reconstruct", "cpu")
        for resolution in args.resolutions:
            start = time.perf_counter()
            with torch.no_grad():
                values = sdf_grid(field, resolution, bound, torch.device("cpu"))
            mesh, _, _ = keep_components(marching_cubes(values, bound), min_component)
            seconds = time.perf_counter() - start
            scores = evaluate(mesh, gt)
            rows.append((name, resolution, seconds, len(mesh.faces), scores.chamfer, scores.iou))
            print(f"{name:12s} {resolution:5d} {seconds:8.1f} {len(mesh.faces):9d} {scores.chamfer:8.4f} "
                  f"{scores.iou:6.3f}", flush=True)
    for resolution in args.resolutions:
        mine = [r for r in rows if r[1] == resolution]
        print(f"{'mean':12s} {resolution:5d} {np.mean([r[2] for r in mine]):8.1f} "
              f"{np.mean([r[3] for r in mine]):9.0f} {np.mean([r[4] for r in mine]):8.4f} "
              f"{np.mean([r[5] for r in mine]):6.3f}")


if __name__ == "__main__":
    main()
