"""Known shapes for reconstruction tests: a box rendered at the 16 cameras, small fields and settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import trimesh
from PIL import Image

from img2mesh.pipeline.config import SceneConfig
from img2mesh.reconstruct.fields import FieldConfig, NeuSField
from img2mesh.reconstruct.renderer import RenderSettings
from img2mesh.reconstruct.trainer import TrainSettings
from img2mesh.utils import cameras
from img2mesh.utils.raster import rasterize

BOUND = SceneConfig().bound
RENDER = RenderSettings(coarse_samples=32, fine_samples=32, bound=BOUND, up_sample_steps=2)


def render_views(mesh: trimesh.Trimesh, folder: Path, size: int = 64, alpha: bool = True, padding: int = 3,
                 colors: Optional[np.ndarray] = None) -> Path:
    """The mesh at the 16 SyncDreamer cameras, RGBA (or RGB on white); vertex ``colors`` in [0, 1]
    (default: from position)."""
    folder.mkdir(parents=True, exist_ok=True)
    K = torch.tensor(cameras.intrinsics(size), dtype=torch.float32)
    colors = (np.asarray(mesh.vertices) * 0.8 + 0.5).clip(0, 1) if colors is None else colors
    for i, pose in enumerate(cameras.target_poses()):
        raster = rasterize(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces), K,
                           torch.tensor(pose, dtype=torch.float32), size, size)
        covered = raster.mask.numpy()
        image = np.ones((size, size, 3))
        face = raster.face.numpy()[covered]
        image[covered] = (colors[mesh.faces[face]] * raster.bary.numpy()[covered][..., None]).sum(1)
        rgb = (image * 255).round().astype(np.uint8)
        if alpha:
            Image.fromarray(np.dstack([rgb, covered.astype(np.uint8) * 255])).save(folder / f"{i:0{padding}d}.png")
        else:
            Image.fromarray(rgb).save(folder / f"{i:0{padding}d}.png")
    return folder


def box_mesh() -> trimesh.Trimesh:
    """An off-centre box: far from the sphere NeuS starts from, so recovering it means learning."""
    box = trimesh.creation.box(extents=(0.6, 0.35, 0.45))
    box.apply_translation((0.08, -0.05, 0.02))
    return box


NEAR_WHITE = (0.96, 0.95, 0.93)  # a light beige: above the white-background threshold in every channel


def figure_with_a_light_head() -> tuple[trimesh.Trimesh, np.ndarray, np.ndarray]:
    """A dark-ish body with a near-white head on top (touching the silhouette in every view): the
    mesh, its vertex colours, and the head's centre."""
    body = trimesh.creation.box(extents=(0.3, 0.3, 0.4))
    body.apply_translation((0.0, 0.0, -0.12))
    head = trimesh.creation.box(extents=(0.22, 0.22, 0.2))
    head.apply_translation((0.0, 0.0, 0.18))
    colors = np.concatenate([np.tile([0.55, 0.3, 0.2], (len(body.vertices), 1)),
                             np.tile(NEAR_WHITE, (len(head.vertices), 1))])
    return trimesh.util.concatenate([body, head]), colors, np.array([0.0, 0.0, 0.18])


# The toy scenes are rendered, perfectly consistent views at 64²: the reconstruct defaults' robust terms
# (made for generated views, docs/benchmarks.md) are off here so these tests measure what they name;
# the robust terms have their own tests (tests/reconstruct/test_poses.py, test_hull.py, test_config.py).
CONSISTENT_VIEWS = dict(color_loss="l1", mask_margin=0, appearance_dim=0, pose_refine=False)


def small_field(kind: str = "mlp") -> NeuSField:
    """A 64-wide, 4-layer field (hash table 2^14, colour net 2 x 64), the same initial weights every time."""
    from img2mesh.reconstruct.config import ReconstructConfig

    torch.manual_seed(0)
    config = FieldConfig.from_config(ReconstructConfig(field=kind, hidden=64, layers=4, hash_log2_size=14,
                                                       feature_dim=64, color_hidden=64, color_layers=2,
                                                       **CONSISTENT_VIEWS), BOUND, 16)
    return NeuSField(config)


def small_settings(**changes) -> TrainSettings:
    """160 steps of 256 rays at a high learning rate: a box in a minute on a CPU (``changes`` override)."""
    from img2mesh.reconstruct.config import ReconstructConfig

    base = TrainSettings.from_config(ReconstructConfig(steps=160, rays_per_step=256, learning_rate=5e-3,
                                                       warmup_steps=10, checkpoint_every=60, **CONSISTENT_VIEWS),
                                     seed=0)
    return dataclasses.replace(base, **changes)


def iou_with_truth(field: NeuSField, truth: trimesh.Trimesh) -> float:
    from img2mesh.evaluation.metrics import volume_iou
    from img2mesh.mesh.extract import keep_components, marching_cubes, sdf_grid

    device = next(field.parameters()).device
    mesh, _, _ = keep_components(marching_cubes(sdf_grid(field, 64, 0.6, device), 0.6), 1.0)  # largest only
    return volume_iou(mesh, truth)


def mesh_untrained_field(tmp_path: Path, overrides: list[str]) -> tuple[Path, dict]:
    """Run the real mesh stage on an untrained field (a rough sphere: enough surface to decimate);
    the run folder and the mesh stage's manifest facts."""
    from img2mesh.app import load_config
    from img2mesh.console import ConsoleReporter
    from img2mesh.mesh.stage import FOLDER_STAGE as MESH
    from img2mesh.pipeline.contract import Stage
    from img2mesh.pipeline.runner import Runner
    from img2mesh.reconstruct.storage import save_field

    def fake_reconstruct(ctx):
        save_field(small_field(), ctx.out_dir)

    stages = [Stage("reconstruct", "", (), ("field.json",), (), run=fake_reconstruct), MESH]
    image = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(image)
    result = Runner(stages, load_config(overrides=overrides), "cpu", ConsoleReporter(quiet=True)).run(image, tmp_path / "out")
    assert result.ok, result.error
    return tmp_path / "out", json.loads((tmp_path / "out" / "img2mesh.json").read_text())["stages"]["mesh"]["info"]
