"""Oracle-view reconstruction benchmark on the shared Google Scanned Objects.

Reconstructs each object from its 16 ground-truth views (``../shared/gso/NAME/000.png`` ...) with the
reconstruct + mesh stages and scores the exported mesh with the papers' metric (Chamfer distance,
64³ volume IoU; ``img2mesh/evaluation/metrics.py``). ``--hull`` also scores a visual hull carved from
the 16 ground-truth masks, whose reference values are mean CD 0.0110 / IoU 0.650. PSNR is the
textured GLB's albedo re-rendered at the 16 cameras against the ground-truth views (on white).

    python benchmarks/reconstruct_gso.py --preset smoke                 # CPU: a few minutes per object
    python benchmarks/reconstruct_gso.py --preset smoke --no-alpha      # views as generate writes them
    python benchmarks/reconstruct_gso.py --preset default --field mlp hashgrid --device cuda
    python benchmarks/reconstruct_gso.py --keep /tmp/gso-runs   # then: remesh_gso.py /tmp/gso-runs/mlp/*
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from img2mesh.app import reconstruct_stages
from img2mesh.evaluation.gso import GSO_ANGLES_DEG, normalise_ground_truth
from img2mesh.evaluation.metrics import evaluate, load_mesh, render_psnr
from img2mesh.mesh.export import to_world_frame
from img2mesh.pipeline.config import SceneConfig, load_config
from img2mesh.pipeline.runner import Runner
from img2mesh.utils.device import resolve_device

if TYPE_CHECKING:
    import trimesh

GSO = Path(os.environ.get("IMG2MESH_GSO_DIR", Path(__file__).resolve().parents[2] / "shared" / "gso"))


def visual_hull(folder: Path, resolution: int = 128, bound: float = SceneConfig().bound) -> "trimesh.Trimesh":
    """Carve a 3-D grid with the 16 silhouettes at the SyncDreamer cameras; marching cubes of the result."""
    from img2mesh.mesh.extract import marching_cubes
    from img2mesh.reconstruct.views import load_views
    from img2mesh.utils.hull import carve

    views = load_views(folder)
    inside = carve(views.silhouettes, views.Ks, views.poses, resolution, bound)
    return marching_cubes(np.where(inside, -1.0, 1.0).astype(np.float32), bound)


def without_alpha(folder: Path, into: Path) -> Path:
    """The views of ``folder`` composited on white and saved as RGB, as the generate stage writes them."""
    from PIL import Image

    from img2mesh.reconstruct.views import find_view_files

    into.mkdir(parents=True, exist_ok=True)
    for path in find_view_files(folder):
        with Image.open(path) as img:
            rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        Image.alpha_composite(white, rgba).convert("RGB").save(into / path.name)
    if (folder / "cameras.json").is_file():
        (into / "cameras.json").write_bytes((folder / "cameras.json").read_bytes())
    return into


def reconstruct_object(name: str, preset: str, field: str, device: str, overrides: list[str],
                       alpha: bool = True, keep: Optional[Path] = None) -> dict:
    """Reconstruct + mesh one shared object from its 16 ground-truth views; CD, IoU, PSNR, seconds.

    ``alpha=False`` feeds the views composited on white without their alpha channel; ``keep`` copies
    the run folder to ``keep/NAME`` (what ``benchmarks/remesh_gso.py`` reads).
    """
    folder = GSO / name
    gt = normalise_ground_truth(load_mesh(folder / "model.obj"), GSO_ANGLES_DEG[name])
    start = time.perf_counter()
    psnr = float("nan")
    if field == "hull":
        mesh, method = visual_hull(folder), "visual hull (16 masks)"
    else:
        config = load_config(preset, overrides=[f"reconstruct.field={field}", "mesh.formats=[glb]",
                                                "mesh.preview=false", *overrides])
        runner = Runner(reconstruct_stages(), config, resolve_device(device))
        with tempfile.TemporaryDirectory() as out:
            views = folder if alpha else without_alpha(folder, Path(out) / "views")
            result = runner.run(views, Path(out) / "result")
            runner.close()
            if not result.ok:
                raise SystemExit(f"{name}: {result.error}")
            if keep is not None:
                shutil.copytree(Path(out) / "result", keep / name, dirs_exist_ok=True)
            mesh = to_world_frame(load_mesh(Path(out) / "result" / "mesh.glb"))
            if mesh.visual.kind == "texture":  # the textured GLB against the 16 GT views
                psnr = render_psnr(mesh, folder)
        method = f"{preset} / {field}" + ("" if alpha else " / no alpha")
    seconds = time.perf_counter() - start
    scores = evaluate(mesh, gt)
    return {"object": name, "method": method, "chamfer": scores.chamfer, "iou": scores.iou, "psnr": psnr,
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--field", nargs="+", default=["mlp"], choices=["mlp", "hashgrid"])
    parser.add_argument("--objects", nargs="+", default=sorted(GSO_ANGLES_DEG))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--hull", action="store_true", help="also score the visual-hull baseline")
    parser.add_argument("--no-alpha", dest="alpha", action="store_false",
                        help="drop the views' alpha (composited on white), as generated views arrive")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", type=Path, help="keep each run folder as KEEP/NAME (for remesh_gso.py)")
    args = parser.parse_args()

    results = []
    print(f"{'object':12s} {'method':32s} {'CD':>8s} {'IoU':>7s} {'PSNR':>8s} {'seconds':>8s}")
    for field in (["hull"] if args.hull else []) + args.field:
        for name in args.objects:
            r = reconstruct_object(name, args.preset, field, args.device, args.overrides, args.alpha,
                                   args.keep / field if args.keep and field != "hull" else None)
            results.append(r)
            print(f"{name:12s} {r['method']:32s} {r['chamfer']:8.4f} {r['iou']:7.3f} {r['psnr']:8.2f} "
                  f"{r['seconds']:8.1f}", flush=True)
        rows = [r for r in results if r["method"] == results[-1]["method"]]
        print(f"{'mean':12s} {rows[0]['method']:32s} {np.mean([r['chamfer'] for r in rows]):8.4f} "
              f"{np.mean([r['iou'] for r in rows]):7.3f} {np.mean([r['psnr'] for r in rows]):8.2f} "
              f"{np.mean([r['seconds'] for r in rows]):8.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
