"""The reconstruct stage: views at known cameras -> a trained NeuS field (``field.safetensors``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from img2mesh.pipeline.contract import Stage, StageContext
from img2mesh.reconstruct.config import ReconstructConfig
from img2mesh.reconstruct.panel import panel

if TYPE_CHECKING:
    from img2mesh.pipeline.config import Config

CHECKPOINT = "checkpoint.pt"
FEEDBACK_GRID = "feedback/sdf.npy"  # generate's last feedback fit, beside a sample set's views


def reconstruct(ctx: StageContext, views_dir: Path, cameras_file: Optional[Path],
                folder: Optional[Path] = None) -> dict[str, Any]:
    """Train a field on the views of ``views_dir`` and save it in ``folder`` (default: the stage folder)."""
    import numpy as np
    import torch

    from img2mesh.reconstruct.fields import FieldConfig, NeuSField
    from img2mesh.reconstruct.masks import RemoverMasks
    from img2mesh.reconstruct.occupancy import make_grid
    from img2mesh.reconstruct.poses import PoseCorrection
    from img2mesh.reconstruct.recipe import choose
    from img2mesh.reconstruct.renderer import RenderSettings
    from img2mesh.reconstruct.storage import save_field
    from img2mesh.reconstruct.trainer import TrainSettings, train
    from img2mesh.reconstruct.views import load_views

    masks = RemoverMasks(ctx)
    views = load_views(views_dir, ctx.config.reconstruct.image_size, cameras_file, masks)
    bound = ctx.config.scene.bound
    given = views
    native = NativeViews(views, views_dir, cameras_file, masks, ctx.config.reconstruct.image_size)
    # the levers (and cameras) these views call for; registration reads the views at their own size
    cfg, recipe, views = choose(ctx.config.reconstruct, views, bound, native)
    if recipe.registration.get("registered"):
        facts = recipe.registration
        ctx.log.info("reconstruct: cameras registered to the silhouettes (shift %.2f px on average, at most %.2f px, "
                     "%.2f deg, %.2f %% scale): disagreement %.4f -> %.4f", facts["register_shift_px_mean"],
                     facts["register_shift_px_max"], facts["register_rotation_deg_max"],
                     facts["register_scale_pct_max"], recipe.disagreement, facts["view_disagreement_registered"])
    if recipe.name != "as configured":
        ctx.log.info("reconstruct: the views' silhouettes disagree by %.3f: the %s recipe (%s)", recipe.disagreement,
                     recipe.name, ", ".join(f"{k} {v}" for k, v in recipe.levers.items()))
    config = FieldConfig.from_config(cfg, bound, len(views.images))
    torch.manual_seed(ctx.config.run.seed)  # the initial weights too come from the run's seed
    field = NeuSField(config)
    device = torch.device(ctx.device)
    grid = make_grid(cfg.sampler, device, bound, cfg.grid_resolution, cfg.march_steps)
    sampling = (f"{cfg.samples_per_ray} dense samples" if grid is None else
                f"occupancy grid {cfg.grid_resolution}³ ({grid.backend}), {cfg.march_steps} steps across")
    ctx.log.info("reconstruct: %s field (%s), %d steps x %d rays, %s", cfg.field, field.backend,
                 cfg.steps, cfg.rays_per_step, sampling)
    settings = TrainSettings.from_config(cfg, ctx.config.run.seed)
    render = RenderSettings.from_config(cfg, bound)
    folder = folder or ctx.out_dir
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / CHECKPOINT
    if not ctx.resumed:
        checkpoint.unlink(missing_ok=True)
    hull = {}
    if cfg.init != "sphere" and not checkpoint.is_file():  # a checkpoint already holds the fitted start
        hull = start_from_masks(ctx, cfg, field, views, device, views_dir / FEEDBACK_GRID)
    shown = [0]  # steps the bar has shown; a resumed run's first step jumps it to the checkpoint

    def advance(step: int, loss: float) -> None:
        task.advance(step + 1 - shown[0], loss=loss)
        shown[0] = step + 1

    poses = PoseCorrection(len(views.images)) if settings.pose_refine else None
    with ctx.progress("NeuS training", total=cfg.steps) as task:
        stats = train(field, views, settings, render, device, checkpoint, on_step=advance, grid=grid, poses=poses)
    checkpoint.unlink(missing_ok=True)  # a finished field needs no resume point
    save_field(field, folder)
    save_fitted_views(ctx, field, views, given, recipe.moves, native, poses, render, device, folder)
    if poses is not None:  # how far the cameras moved, in pixels and degrees (views.Ks: at the training size)
        distance = float(np.linalg.norm(views.poses[:, :, 3], axis=-1).mean())
        stats.update(poses.summary(distance, float(views.Ks[:, 0, 0].mean())))
    return {**stats, **hull, **recipe.facts(), "init": cfg.init, "field": cfg.field, "backend": field.backend,
            "mask_source": views.mask_source, "views": int(views.images.shape[0]), "view_size": list(views.size)}


class NativeViews:
    """The views at their own size, read (and masked) once when first asked for: registration and the
    fitted views saved beside the field both want them when training resized the views."""

    def __init__(self, views: Any, views_dir: Path, cameras_file: Optional[Path], masks: Any, image_size: int) -> None:
        self.views, self.args, self.resized = views, (views_dir, 0, cameras_file, masks), bool(image_size)
        self.read: Any = None

    def __call__(self) -> Any:
        from img2mesh.reconstruct.views import load_views

        if not self.resized:
            return self.views
        if self.read is None:
            self.read = load_views(*self.args)
        return self.views if self.read.size == self.views.size else self.read


def save_fitted_views(ctx: StageContext, field: Any, views: Any, given: Any, moves: Any, native: NativeViews,
                      poses: Any, render: Any, device: Any, folder: Path) -> None:
    """``views.npz`` and ``cameras.json`` beside the field: the views at their own size (``native``), the
    cameras after registration (``moves``, when the views were registered) and pose refinement, each
    view's colour correction, and the cameras as given."""
    import dataclasses

    from img2mesh.reconstruct.fitted import colour_corrections, refined_poses, save_fitted
    from img2mesh.reconstruct.register import moved_cameras

    fitted = refined_poses(views.poses, poses)
    colour = colour_corrections(field, views, fitted, render, device, ctx.config.run.seed)
    saved = native()
    if saved is native.views:
        saved = views  # the training views themselves, registered cameras and all
    elif moves is not None:  # the same moves (fractions of the width) at the native size
        Ks, _ = moved_cameras(saved.Ks, saved.poses, moves, *saved.size)
        saved = dataclasses.replace(saved, Ks=Ks)
    save_fitted(folder, saved, fitted, colour, given.poses)


def start_from_masks(ctx: StageContext, cfg: Any, field: Any, views: Any, device: Any,
                     feedback_grid: Path) -> dict[str, Any]:
    """Fit the field to the masks' visual hull (``reconstruct.init: hull``) or to the signed distance of
    generate's last feedback fit (``feedback``; the hull when the sample set has none); the sphere when
    the hull is empty."""
    import time

    import numpy as np

    from img2mesh.reconstruct.hull_init import HullSettings, fit_to_grid, fit_to_hull

    settings = HullSettings.from_config(cfg)
    args = (ctx.config.scene.bound, settings, ctx.config.run.seed, device)
    start = time.perf_counter()
    if cfg.init == "feedback":
        try:
            grid = np.load(feedback_grid, allow_pickle=False)  # never unpickle: a plain array or nothing
            with ctx.progress(f"fitting generate's feedback surface ({settings.steps} steps)",
                              total=settings.steps) as task:
                fraction, error = fit_to_grid(field, grid, *args, on_step=task.advance)
            seconds = time.perf_counter() - start
            ctx.log.info("reconstruct: started from generate's feedback fit (%.0f%% of the cube, fit error %.4f, "
                         "%.1f s)", 100 * fraction, error, seconds)
            return {"start": "feedback", "feedback_fraction": fraction, "feedback_fit_error": error,
                    "init_seconds": round(seconds, 2)}
        except (OSError, ValueError) as exc:
            reason = "it was made without generate.feedback" if not feedback_grid.is_file() else exc
            ctx.log.warning("reconstruct: no feedback fit to start from (%s); starting from the visual hull", reason)
    try:
        with ctx.progress(f"fitting the visual hull ({settings.steps} steps)", total=settings.steps) as task:
            info = fit_to_hull(field, views, *args, on_step=task.advance)
    except ValueError as exc:  # masks that agree on nothing: NeuS's sphere is the better start
        ctx.log.warning("reconstruct: %s; starting from a sphere", exc)
        return {"start": "sphere", "hull_init": "empty"}
    seconds = time.perf_counter() - start
    ctx.log.info("reconstruct: started from the visual hull (%.0f%% of the cube, fit error %.4f, %.1f s)",
                 100 * info["hull_fraction"], info["hull_fit_error"], seconds)
    return {**info, "start": "hull", "hull_init_seconds": round(seconds, 2)}


def run_on_generated(ctx: StageContext) -> dict[str, Any]:
    """The chosen sample set(s) of generate's views (enhance's, when it ran): one field, or one per set."""
    from img2mesh.generate.sets import chosen_sets, for_each_set, set_name

    generated = ctx.stage_dir("generate")
    select = ctx.config.reconstruct.select
    chosen = chosen_sets(select, generated)
    # The enhance stage (when on) wrote the same sample sets, enhanced, with cameras for their size.
    views = ctx.stage_dir("enhance") if ctx.config.enhance.enabled else generated
    enhanced = views != generated
    if select != "all":
        ctx.log.info("reconstruct: sample %d (--select %s)%s", chosen[0], select, ", enhanced views" if enhanced else "")

    def fit(k: int, folder: Path) -> dict[str, Any]:
        return {**reconstruct(ctx, views / set_name(k), views / "cameras.json", folder), "sample": k}

    info = for_each_set(chosen, ctx.out_dir, select == "all", fit, ctx.log,
                        done=lambda folder: ctx.resumed and (folder / "field.json").is_file())
    return {**info, "select": select, "samples": chosen, "enhanced": enhanced}


def run_on_folder(ctx: StageContext) -> dict[str, Any]:
    return reconstruct(ctx, ctx.input_path, None)


def check_views_folder(path: Path, config: "Config") -> None:
    """Refuse a bad views folder before anything is written (``img2mesh reconstruct``); a folder with
    no views at all is a usage error, as an empty folder is to ``img2mesh run``."""
    from img2mesh.errors import UsageError
    from img2mesh.reconstruct.views import VIEW_NAME, load_views

    if path.is_dir() and not any(VIEW_NAME.match(p.name) for p in path.iterdir()):
        raise UsageError(f"{path} holds no views (expected 0.png, 1.png, ... in any zero padding)")
    load_views(path, config.reconstruct.image_size)


def may_use_cuda(device: str) -> bool:
    """Whether ``run.device`` may resolve to a GPU here (``auto`` asks torch)."""
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def check_select(config: "Config") -> None:
    """``--select K`` beyond the sample sets ``generate`` will make is a usage error before anything runs."""
    from img2mesh.errors import UsageError
    from img2mesh.generate.config import AUTO_MAX_SETS

    select, count = config.reconstruct.select, config.generate.num_samples
    if count == "auto":  # how many depends on the GPU: one on the CPU, at most AUTO_MAX_SETS on a GPU
        if isinstance(select, int) and select >= AUTO_MAX_SETS:
            raise UsageError(f"--select {select}: --num-samples auto makes at most {AUTO_MAX_SETS} sample "
                             f"sets; set --num-samples {select + 1} or more")
        if isinstance(select, int) and select >= 1 and not may_use_cuda(config.run.device):
            raise UsageError(f"--select {select}: on the CPU --num-samples auto makes one sample set (0); set "
                             f"--num-samples {select + 1} or more")
        return
    if isinstance(select, int) and select >= count:
        raise UsageError(f"--select {select}: there are only {count} sample set(s) "
                         f"(0..{count - 1}); raise --num-samples or pick another")


_COMMON = dict(name="reconstruct", description="fit a NeuS signed-distance field to the views",
               outputs=("**/field.safetensors", "**/field.json", "**/cameras.json", "**/views.npz"),
               config_keys=("reconstruct", "scene", "run.seed", "segment.random_weights", "segment.seg_size",
                            "segment.matting_size"),
               models=("carvekit",),  # masks of views without alpha (the segment stage's remover)
               # bumped when results change; what each version changed: CHANGELOG.md, "Stage versions"
               version=10, config=ReconstructConfig, report=panel)
STAGE = Stage(reads=("generate", "enhance"), run=run_on_generated, check_config=check_select, **_COMMON)
FOLDER_STAGE = Stage(reads=(), run=run_on_folder, check_input=check_views_folder, **_COMMON)
