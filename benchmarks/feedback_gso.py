"""The 3D feedback operator on its own: does one feedback operation pull inconsistent views back
towards the truth?

For each shared GSO object, its 16 ground-truth views are degraded as generated views are
(``img2mesh/evaluation/degrade.py``, ``--level``, default the typical level), brought to the fitting
size, then one feedback operation is applied as ``generate`` applies it, with the VAE's decode and
encode skipped: the fast 3D model (``img2mesh/feedback/operator.py``'s ViewFitter, started from the
hull of the degraded masks, with reconstruct's robust terms as configured) is fitted to the views and
rendered at the 16 cameras, and the renders replace the views with ``--weight`` where they cover the
object. Reported per object and on average: PSNR to the ground truth and the sample score's
consistency (visual-hull silhouette agreement), before and after, and the seconds of the operation.

    python benchmarks/feedback_gso.py                      # CPU: about 90 s per object
    python benchmarks/feedback_gso.py --level 3 --weight 0.25 0.5 1.0 --save /tmp/strips
    python benchmarks/feedback_gso.py --set reconstruct.appearance_dim=0   # without a robust term
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from img2mesh.app import load_config
from img2mesh.evaluation.degrade import LEVELS, TYPICAL_LEVEL, degrade_views
from img2mesh.feedback.operator import FeedbackSettings, ViewFitter, psnr
from img2mesh.generate.scoring import consistency
from img2mesh.utils import cameras

GSO = Path(os.environ.get("IMG2MESH_GSO_DIR", Path(__file__).resolve().parents[2] / "shared" / "gso"))
OBJECTS = ("bell", "chicken", "lion", "school_bus2", "sofa", "teapot")
BOUND = 0.6


def rgba_views(name: str) -> np.ndarray:
    """The 16 RGBA renders of an object (N,256,256,4 uint8)."""
    return np.stack([np.asarray(Image.open(GSO / name / f"{i:03d}.png").convert("RGBA")) for i in range(16)])


def at_size(views: np.ndarray, size: int) -> np.ndarray:
    """N,H,W,3 uint8 views on white, area-averaged to size² (N,size,size,3 float32 in [0, 1])."""
    return np.stack([np.asarray(Image.fromarray(v).resize((size, size), Image.BOX), dtype=np.float32) / 255
                     for v in views])


def score(views: np.ndarray, truth: np.ndarray, Ks: np.ndarray, poses: np.ndarray) -> tuple[float, float]:
    """PSNR to the ground truth and the hull consistency of a set of views in [0, 1]."""
    as_uint8 = (views * 255).round().astype(np.uint8)
    return psnr(views, truth), float(consistency(as_uint8, Ks, poses, BOUND).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", nargs="+", default=list(OBJECTS))
    parser.add_argument("--size", type=int, default=64, help="generate.feedback.image_size")
    parser.add_argument("--fit-steps", type=int, default=100, help="generate.feedback.fit_steps")
    parser.add_argument("--weight", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--level", type=int, default=TYPICAL_LEVEL, choices=sorted(LEVELS),
                        help="degradation level of the views (evaluation/degrade.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config KEY=VALUE")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--save", type=Path, help="write NAME.png: truth, perturbed, renders, blended (rows)")
    args = parser.parse_args()
    Ks = np.repeat(cameras.intrinsics(args.size)[None], 16, 0)
    poses = cameras.target_poses()
    rows = []
    print(f"{'object':12s} {'views':16s} {'PSNR':>7s} {'consist.':>8s} {'seconds':>8s}")
    config = load_config(overrides=["generate.feedback.steps=[1]", f"generate.feedback.fit_steps={args.fit_steps}",
                                    f"generate.feedback.image_size={args.size}", *args.overrides])
    settings = FeedbackSettings.from_config(config)
    for name in args.objects:
        rgba = rgba_views(name)
        truth = at_size(degrade_views(rgba, LEVELS[0], 0), args.size)
        noisy = at_size(degrade_views(rgba, LEVELS[args.level], sum(map(ord, name))), args.size)
        start = time.perf_counter()
        fitter = ViewFitter(Ks, poses, settings, 0, torch.device("cpu"))
        fitter.fit(noisy)
        renders, coverage = fitter.render_views()
        seconds = time.perf_counter() - start
        results = {"truth": score(truth, truth, Ks, poses), "degraded": score(noisy, truth, Ks, poses)}
        for w in args.weight:
            blended = noisy + w * coverage[..., None] * (renders - noisy)
            results[f"feedback w={w:g}"] = score(blended, truth, Ks, poses)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            blended = noisy + args.weight[0] * coverage[..., None] * (renders - noisy)
            rows_img = np.concatenate([np.concatenate(list(v), 1) for v in (truth, noisy, renders, blended)], 0)
            Image.fromarray((rows_img * 255).round().astype(np.uint8)).save(args.save / f"{name}.png")
        for label, (p, c) in results.items():
            if label == "truth":
                continue
            print(f"{name:12s} {label:16s} {p:7.2f} {c:8.3f} {seconds if label != 'perturbed' else 0:8.1f}",
                  flush=True)
            rows.append({"object": name, "views": label, "psnr": p, "consistency": c, "seconds": seconds,
                         "truth_consistency": results["truth"][1]})
    for label in dict.fromkeys(r["views"] for r in rows):
        mine = [r for r in rows if r["views"] == label]
        print(f"{'mean':12s} {label:16s} {np.mean([r['psnr'] for r in mine]):7.2f} "
              f"{np.mean([r['consistency'] for r in mine]):8.3f}")
    print(f"ground-truth consistency: mean {np.mean([r['truth_consistency'] for r in rows]):.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
