"""The 3D feedback operator on its own (issue 15): does one feedback operation pull inconsistent views
back towards the truth?

For each shared GSO object, its 16 ground-truth views (on white, at the fitting size) are perturbed
one by one so that they disagree (a colour shift, a small warp, a blotch, each drawn per view), then
one feedback operation is applied as ``generate`` applies it, with the VAE's decode and encode
skipped: the fast 3D model (``generate/feedback.py``'s ViewFitter, started from the hull of the
perturbed masks) is fitted to the perturbed views and rendered at the 16 cameras, and the renders
replace the views with ``--weight`` where they cover the object. Reported per object and on average:
PSNR to the ground truth and the sample score's consistency (visual-hull silhouette agreement),
before and after.

    python benchmarks/feedback_gso.py                      # CPU: about a minute per object
    python benchmarks/feedback_gso.py --fit-steps 300 --weight 0.25 0.5 1.0 --save /tmp/strips
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

from img2mesh.generate.feedback import FeedbackSettings, ViewFitter, psnr
from img2mesh.generate.scoring import consistency
from img2mesh.utils import cameras

GSO = Path(os.environ.get("IMG2MESH_GSO_DIR", Path(__file__).resolve().parents[2] / "shared" / "gso"))
OBJECTS = ("bell", "chicken", "lion", "school_bus2", "sofa", "teapot")
BOUND = 0.6


def ground_truth_views(name: str, size: int) -> np.ndarray:
    """The 16 views of an object composited on white, area-averaged to size² (N,H,W,3 in [0, 1])."""
    views = []
    for i in range(16):
        with Image.open(GSO / name / f"{i:03d}.png") as img:
            rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB").resize((size, size), Image.BOX)
        views.append(np.asarray(rgb, dtype=np.float32) / 255)
    return np.stack(views)


def perturb(views: np.ndarray, seed: int) -> np.ndarray:
    """Each view changed on its own: a colour shift of the object, a warp of up to 4 % of the image,
    and a blotch of a random colour on a random part of the object."""
    rng = np.random.default_rng(seed)
    size = views.shape[1]
    out = []
    for view in views:
        img = Image.fromarray((view * 255).round().astype(np.uint8))
        shift = rng.uniform(-0.04, 0.04, 2) * size
        angle = rng.uniform(-4, 4)
        img = img.rotate(angle, resample=Image.BILINEAR, translate=tuple(shift), fillcolor=(255, 255, 255))
        v = np.asarray(img, dtype=np.float32) / 255
        inside = v.min(-1) < 0.93
        v = np.where(inside[..., None], np.clip(v + rng.uniform(-0.15, 0.15, 3), 0, 1), v)
        ys, xs = np.nonzero(inside)
        if len(ys):
            c = rng.integers(len(ys))
            yy, xx = np.mgrid[:size, :size]
            r = rng.uniform(0.06, 0.12) * size
            blotch = ((yy - ys[c]) ** 2 + (xx - xs[c]) ** 2 < r * r) & inside
            v = np.where(blotch[..., None], rng.uniform(0, 1, 3), v)
        out.append(v.astype(np.float32))
    return np.stack(out)


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
    parser.add_argument("--json", type=Path)
    parser.add_argument("--save", type=Path, help="write NAME.png: truth, perturbed, renders, blended (rows)")
    args = parser.parse_args()
    Ks = np.repeat(cameras.intrinsics(args.size)[None], 16, 0)
    poses = cameras.target_poses()
    rows = []
    print(f"{'object':12s} {'views':16s} {'PSNR':>7s} {'consist.':>8s} {'seconds':>8s}")
    for name in args.objects:
        truth = ground_truth_views(name, args.size)
        noisy = perturb(truth, seed=sum(map(ord, name)))
        settings = FeedbackSettings(frozenset({1}), 1.0, args.fit_steps, 1024, args.size)
        start = time.perf_counter()
        fitter = ViewFitter(Ks, poses, settings, BOUND, 0, torch.device("cpu"))
        fitter.fit(noisy)
        renders, coverage = fitter.render_views()
        seconds = time.perf_counter() - start
        results = {"truth": score(truth, truth, Ks, poses), "perturbed": score(noisy, truth, Ks, poses)}
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
