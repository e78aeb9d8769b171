"""The generate stage: the recentred input + its elevation -> 16 synchronized views per sample.

3D-aware feedback during sampling is not generation's own: it fits ``reconstruct``'s field, so it
lives above both (``img2mesh/feedback``) and the application wires it in as ``run``'s ``feedback``
(a :data:`FeedbackFactory`); this package only calls it.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from img2mesh.errors import UsageError
from img2mesh.generate.config import GenerateConfig
from img2mesh.generate.panel import panel
from img2mesh.generate.runtime import check_config
from img2mesh.generate.sets import SCORES_FILE, set_name
from img2mesh.generate.weights import stage_weights
from img2mesh.pipeline.contract import Stage, StageContext
from img2mesh.utils.files import atomic_save_image, atomic_write_bytes, atomic_write_json
from img2mesh.utils.images import grid

if TYPE_CHECKING:
    from img2mesh.generate.scoring import SampleScore

# (the stage's context, the model, the sample sets, the device) -> the sampler's feedback hook, or None
# when generate.feedback is off. The hook has ``signed_distances()`` and ``summary()`` besides its call.
FeedbackFactory = Callable[[StageContext, Any, int, Any], Optional[Any]]


def run(ctx: StageContext, feedback: Optional[FeedbackFactory] = None) -> dict[str, Any]:
    """Generate the views; ``feedback`` (wired in by the application) makes the 3D feedback hook."""
    import torch

    from img2mesh.generate.runtime import input_image, sample_sets, syncdreamer
    from img2mesh.generate.sampler import SamplerSettings, decode_views, sample_latents, seeded_randn
    from img2mesh.generate.scoring import best
    from img2mesh.utils import cameras

    cfg = ctx.config.generate
    elevation_deg = float(json.loads((ctx.stage_dir("elevation") / "elevation.json").read_text())["elevation_deg"])
    loaded = syncdreamer(ctx)
    model = loaded.model
    device = torch.device(ctx.device)
    sets = sample_sets(cfg.num_samples, device)  # after loading: the weights already hold their memory
    image = input_image(ctx).expand(sets, -1, -1, -1).contiguous()
    elevation = torch.full((sets,), math.radians(elevation_deg), device=device)
    settings = SamplerSettings.from_config(cfg)
    scales = settings.guidance.scales
    randn = seeded_randn(ctx.config.run.seed, device)
    ctx.log.info("generate: %d sample(s), %s guidance %s, %d DDIM steps, eta %.2f, seed %d",
                 sets, cfg.guidance, list(scales), cfg.steps, cfg.eta, ctx.config.run.seed)
    if cfg.feedback.steps and feedback is None:
        raise UsageError("generate.feedback.steps is set, but this pipeline has no 3D feedback wired in")
    hook = feedback(ctx, model, sets, device) if feedback is not None else None
    with ctx.progress("denoising", total=cfg.steps) as task:
        latents = sample_latents(model, image, elevation, settings, randn, on_step=lambda i: task.advance(),
                                 precision=loaded.precision, feedback=hook)
    views = decode_views(model, latents).cpu().numpy()
    if hook is not None:  # the last fits, for reconstruct.init: feedback
        for k, grid_values in enumerate(hook.signed_distances()):
            atomic_write_bytes(ctx.out_dir / f"sample_{k}" / "feedback" / "sdf.npy", npy_bytes(grid_values))
    for k, sample in enumerate(views):
        folder = ctx.out_dir / set_name(k)
        for n, view in enumerate(sample):
            atomic_save_image(folder / f"{n:02d}.png", view)
        atomic_save_image(folder / "grid.png", grid(sample, 4))
        atomic_save_image(folder / "strip.png", grid(sample, len(sample)))
    record = cameras.cameras_record(model.poses.cpu().numpy(), model.Ks[0].cpu().numpy(), elevation_deg)
    atomic_write_json(ctx.out_dir / "cameras.json", record)
    scores = score_sets(ctx, views, record)
    return {
        "model": cfg.model,
        "weights": loaded.weights.record(),
        "guidance": cfg.guidance,
        "scales": list(scales),
        "steps": cfg.steps,
        "eta": cfg.eta,
        "seed": ctx.config.run.seed,
        "num_samples": sets,
        "num_samples_setting": cfg.num_samples,
        "input_latent": cfg.input_latent,
        "precision": loaded.precision.name,
        "input_elevation_deg": elevation_deg,
        "scores": [{k: v for k, v in s.to_dict().items() if k != "per_view"} for s in scores],
        "best_sample": best(scores),
        "feedback": hook.summary() if hook is not None else None,
    }


def npy_bytes(values: np.ndarray) -> bytes:
    """An array as the bytes of a ``.npy`` file (no pickled objects: ``np.load(allow_pickle=False)`` reads it)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def score_sets(ctx: StageContext, views: np.ndarray, record: dict) -> list["SampleScore"]:
    """Score every sample set (``scores.json``) and, for several sets, draw ``samples.png``."""
    from PIL import Image

    from img2mesh.generate.scoring import best, contact_sheet, score_samples
    from img2mesh.utils.cameras import look_at_pose
    from img2mesh.utils.images import composite_on_white

    rgba = Image.open(ctx.stage_dir("segment") / "input_rgba.png")
    input_pose = look_at_pose(0.0, math.radians(record["input_elevation_deg"]))
    poses = np.asarray(record["poses"])
    Ks = np.repeat(np.asarray(record["K"])[None], len(poses), 0)
    with ctx.progress(f"scoring {len(views)} sample set(s)", total=len(views)) as task:
        scores = score_samples(views, Ks, poses, composite_on_white(rgba), np.asarray(rgba)[..., 3] > 127, input_pose,
                               ctx.config.scene.bound, on_set=task.advance)
    atomic_write_json(ctx.out_dir / SCORES_FILE, {"best_sample": best(scores),
                                                    "samples": [s.to_dict() for s in scores]})
    if len(scores) > 1:
        atomic_save_image(ctx.out_dir / "samples.png", contact_sheet(views, scores))
    for s in scores:
        ctx.log.info("generate: sample %d score %.3f (consistency %.3f, input agreement %.3f)",
                     s.sample, s.score, s.consistency, s.input_agreement)
    return scores


STAGE = Stage(
    name="generate",
    description="16 synchronized 256x256 views at the SyncDreamer cameras",
    reads=("segment", "elevation"),
    outputs=("sample_0/00.png", "sample_0/15.png", "sample_0/grid.png", "cameras.json", "scores.json"),
    config_keys=("generate", "scene", "run.seed"),
    version=3,  # bumped when results change; what each version changed: CHANGELOG.md, "Stage versions"
    run=run,
    models=("syncdreamer",),
    check_config=check_config,
    config=GenerateConfig,
    weights=stage_weights,
    report=panel,
)
