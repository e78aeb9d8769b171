"""Where a reconstruct's time goes on the CPU: the hull start against training, by network width.

For one shared GSO object's views it times the hull fit (``reconstruct/hull_init.py``) at the
``smoke`` and ``default`` widths with several point budgets per step, how well each fit agrees with
the hull it was fitted to (fraction of a 64³ grid on the same side), and ten training steps of each
preset, so the fit's share of a reconstruct can be read off (seconds per training step × steps).

    python benchmarks/hull_fit.py --object chicken --points 8192 2048
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

from img2mesh.app import load_config
from img2mesh.reconstruct.fields import FieldConfig, NeuSField
from img2mesh.reconstruct.hull_init import HullSettings, fit_to_hull, hull_signed_distance
from img2mesh.reconstruct.renderer import RenderSettings
from img2mesh.reconstruct.trainer import TrainSettings, train
from img2mesh.reconstruct.views import load_views

GSO = Path(os.environ.get("IMG2MESH_GSO_DIR", Path(__file__).resolve().parents[2] / "shared" / "gso"))


def agreement(field: NeuSField, views, bound: float) -> float:
    """Share of a 64³ grid where the fitted SDF and the hull's signed distance agree on the side."""
    from img2mesh.reconstruct.hull_init import _lookup

    line = torch.linspace(-bound, bound, 64)
    points = torch.stack(torch.meshgrid(line, line, line, indexing="ij"), -1).reshape(-1, 3)
    target = _lookup(torch.from_numpy(hull_signed_distance(views, bound)), points, bound)
    with torch.no_grad():
        return float(((field.sdf(points) < 0) == (target < 0)).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--object", default="chicken")
    parser.add_argument("--presets", nargs="+", default=["smoke", "default"])
    parser.add_argument("--points", type=int, nargs="+", default=[8192, 2048])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 150])
    args = parser.parse_args()
    device = torch.device("cpu")
    print(f"{'preset':8s} {'points':>6s} {'steps':>5s} {'fit s':>7s} {'agree':>6s} {'train s/step':>12s} "
          f"{'fit share of reconstruct':>24s}")
    for preset in args.presets:
        config = load_config(preset)
        cfg, bound = config.reconstruct, config.scene.bound
        views = load_views(GSO / args.object, cfg.image_size)
        field_config = FieldConfig.from_config(cfg, bound, len(views.images))
        settings = dataclasses.replace(TrainSettings.from_config(cfg, 0), steps=10, warmup_steps=1)
        field = NeuSField(field_config)
        start = time.perf_counter()
        train(field, views, settings, RenderSettings.from_config(cfg, bound), device)
        per_step = (time.perf_counter() - start) / 10
        for points in args.points:
            for steps in args.steps:
                torch.manual_seed(0)
                field = NeuSField(field_config)
                hull = dataclasses.replace(HullSettings.from_config(cfg), points=points, steps=steps)
                start = time.perf_counter()
                fit_to_hull(field, views, bound, hull, 0, device)
                seconds = time.perf_counter() - start
                share = seconds / (seconds + per_step * cfg.steps)
                print(f"{preset:8s} {points:6d} {steps:5d} {seconds:7.1f} {agreement(field, views, bound):6.3f} "
                      f"{per_step:12.3f} {100 * share:23.1f}%", flush=True)


if __name__ == "__main__":
    main()
