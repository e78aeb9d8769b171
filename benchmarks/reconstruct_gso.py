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
    python benchmarks/reconstruct_gso.py --degrade 0 2 --hull   # views degraded like generated ones

``--degrade LEVEL...`` feeds views degraded like generated ones (``img2mesh/evaluation/degrade.py``;
level 0 drops alpha only) and scores the colour PSNR against the *clean* views; ``--hull`` then
carves the same degraded masks, and a last table gives each level against level 0.
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

from img2mesh.app import load_config, reconstruct_stages
from img2mesh.evaluation.gso import GSO_ANGLES_DEG, normalise_ground_truth
from img2mesh.evaluation.metrics import evaluate, render_psnr
from img2mesh.mesh.export import load_mesh, to_world_frame
from img2mesh.pipeline.config import SceneConfig
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


def degraded(folder: Path, level: int, seed: int, into: Path) -> Path:
    """The views of ``folder`` degraded at ``level`` (RGB on white, no alpha), saved into ``into``."""
    from PIL import Image

    from img2mesh.evaluation.degrade import LEVELS, degrade_views
    from img2mesh.reconstruct.views import find_view_files

    files = find_view_files(folder)
    rgba = np.stack([np.asarray(Image.open(path).convert("RGBA")) for path in files])
    into.mkdir(parents=True, exist_ok=True)
    for path, view in zip(files, degrade_views(rgba, LEVELS[level], seed)):
        Image.fromarray(view).save(into / path.name)
    return into


def reconstruct_object(name: str, preset: str, field: str, device: str, overrides: list[str],
                       alpha: bool = True, keep: Optional[Path] = None, degrade: Optional[int] = None,
                       seed: int = 0) -> dict:
    """Reconstruct + mesh one shared object from its 16 ground-truth views; CD, IoU, PSNR, seconds.

    ``alpha=False`` feeds the views composited on white without their alpha channel; ``degrade``
    feeds them degraded at that level (``evaluation/degrade.py``, drawn from ``seed``); the PSNR is
    always against the clean views. ``keep`` copies the run folder to ``keep/NAME`` (what
    ``benchmarks/remesh_gso.py`` reads).
    """
    folder = GSO / name
    gt = normalise_ground_truth(load_mesh(folder / "model.obj"), GSO_ANGLES_DEG[name])
    start = time.perf_counter()
    psnr = float("nan")
    suffix = "" if alpha and degrade is None else " / no alpha" if degrade is None else f" / degraded {degrade}"
    if field == "hull":
        with tempfile.TemporaryDirectory() as out:
            views = folder if degrade is None else degraded(folder, degrade, seed, Path(out) / "views")
            mesh, method = visual_hull(views), "visual hull (16 masks)" + suffix
    else:
        config = load_config(preset, overrides=[f"reconstruct.field={field}", "mesh.formats=[glb]",
                                                "mesh.preview=false", *overrides])
        runner = Runner(reconstruct_stages(), config, resolve_device(device))
        with tempfile.TemporaryDirectory() as out:
            if degrade is not None:
                views = degraded(folder, degrade, seed, Path(out) / "views")
            else:
                views = folder if alpha else without_alpha(folder, Path(out) / "views")
            result = runner.run(views, Path(out) / "result")
            runner.close()
            if not result.ok:
                raise SystemExit(f"{name}: {result.error}")
            facts = run_facts(Path(out) / "result" / "img2mesh.json")
            if keep is not None:
                shutil.copytree(Path(out) / "result", keep / name, dirs_exist_ok=True)
            mesh = to_world_frame(load_mesh(Path(out) / "result" / "mesh.glb"))
            if mesh.visual.kind == "texture":  # the textured GLB against the 16 GT views
                psnr = render_psnr(mesh, folder)
        method = f"{preset} / {field}" + suffix
    seconds = time.perf_counter() - start
    scores = evaluate(mesh, gt)
    return {"object": name, "method": method, "level": degrade, "chamfer": scores.chamfer, "iou": scores.iou,
            "psnr": psnr, "seconds": seconds, **(facts if field != "hull" else {})}


RECIPE_FACTS = ("recipe", "view_disagreement", "registered", "view_disagreement_registered", "register_shift_px_mean",
                "register_steps", "register_seconds", "hull_init_seconds")


def run_facts(manifest: Path) -> dict:
    """What a run's manifest says of its recipe (``reconstruct``'s recipe and registration facts) and each
    stage's seconds (whole seconds: the manifest's times)."""
    from datetime import datetime

    stages = json.loads(manifest.read_text())["stages"]
    info = stages.get("reconstruct", {}).get("info", {})
    seconds = {name: (datetime.fromisoformat(s["ended"]) - datetime.fromisoformat(s["started"])).total_seconds()
               for name, s in stages.items() if s.get("started") and s.get("ended")}
    return {"run": {k: info[k] for k in RECIPE_FACTS if k in info}, "stage_seconds": seconds}


def mean_row(rows: list[dict]) -> dict:
    """The means of a method's rows."""
    return {key: float(np.mean([r[key] for r in rows])) for key in ("chamfer", "iou", "psnr", "seconds")}


def print_row(name: str, method: str, r: dict) -> None:
    print(f"{name:12s} {method:36s} {r['chamfer']:8.4f} {r['iou']:7.3f} {r['psnr']:8.2f} {r['seconds']:8.1f}", flush=True)


def print_levels(results: list[dict]) -> None:
    """Each degradation level's means against level 0's, and against the hull of the same masks."""
    levels = sorted({r["level"] for r in results if r["level"] is not None})
    if 0 not in levels:
        return
    methods = sorted({r["method"].rsplit(" / degraded", 1)[0] for r in results if r["level"] is not None})
    print(f"\n{'method':28s} {'level':>5s} {'CD':>8s} {'IoU':>7s} {'PSNR':>7s} {'CD/L0':>7s} {'IoU/L0':>7s} "
          f"{'dPSNR':>7s}")
    for method in methods:
        means = {level: mean_row([r for r in results if r["level"] == level and r["method"].startswith(method + " /")])
                 for level in levels}
        base = means[0]
        for level, m in means.items():
            print(f"{method:28s} {level:5d} {m['chamfer']:8.4f} {m['iou']:7.3f} {m['psnr']:7.2f} "
                  f"{m['chamfer'] / base['chamfer']:7.3f} {m['iou'] / base['iou']:7.3f} {m['psnr'] - base['psnr']:7.2f}")


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
    parser.add_argument("--degrade", type=int, nargs="+", choices=[0, 1, 2, 3], metavar="LEVEL",
                        help="views degraded like generated ones at these levels (0: alpha dropped only)")
    parser.add_argument("--seed", type=int, default=0, help="the degradation's seed")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", type=Path, help="keep each run folder as KEEP/NAME (for remesh_gso.py)")
    args = parser.parse_args()

    results = []
    print(f"{'object':12s} {'method':36s} {'CD':>8s} {'IoU':>7s} {'PSNR':>8s} {'seconds':>8s}")
    for level in args.degrade or [None]:
        for field in (["hull"] if args.hull else []) + args.field:
            for name in args.objects:
                keep = args.keep / field / ("" if level is None else f"level{level}") if args.keep and field != "hull" \
                    else None
                r = reconstruct_object(name, args.preset, field, args.device, args.overrides, args.alpha, keep, level,
                                       args.seed)
                results.append(r)
                print_row(name, r["method"], r)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=2))
            print_row("mean", results[-1]["method"], mean_row([r for r in results if r["method"] == results[-1]["method"]]))
    print_levels(results)


if __name__ == "__main__":
    main()
