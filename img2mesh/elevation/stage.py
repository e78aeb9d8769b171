"""The elevation stage: ``--elevation DEG``, or an estimate from four Zero123-mode views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from img2mesh.elevation.config import ElevationConfig
from img2mesh.elevation.panel import panel
from img2mesh.elevation.weights import stage_weights
from img2mesh.pipeline.contract import Stage, StageContext
from img2mesh.utils.files import atomic_save_image, atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from img2mesh.pipeline.config import Config


def novel_views(ctx: StageContext) -> list[np.ndarray]:
    """The four nearby views of the input, from the SyncDreamer weights in Zero123 mode."""
    import torch

    from img2mesh.elevation.estimate import RELATIVE_POSES
    from img2mesh.generate.model import Guidance
    from img2mesh.generate.runtime import input_image, syncdreamer
    from img2mesh.generate.sampler import SamplerSettings, decode_views, sample_novel_view, seeded_randn

    gen = ctx.config.generate
    loaded = syncdreamer(ctx)
    device = torch.device(ctx.device)
    image = input_image(ctx)
    guidance = Guidance("cfg", (ctx.config.elevation.cfg_scale,))  # One-2-3-45 samples Zero123 at 3
    settings = SamplerSettings(guidance, gen.steps, gen.eta, 1, gen.input_latent)
    views = []
    with ctx.progress("zero123 views", total=len(RELATIVE_POSES)) as task:
        for k, (d_elevation, d_azimuth) in enumerate(RELATIVE_POSES):
            latent = sample_novel_view(loaded.model, image, d_elevation, d_azimuth, settings,
                                       seeded_randn(ctx.config.run.seed + k, device), loaded.precision)
            views.append(decode_views(loaded.model, latent[:, None])[0, 0].cpu().numpy())
            task.advance()
    return views


def plot_curve(curve: dict[float, float], chosen: float, title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    finite = {k: v for k, v in curve.items() if np.isfinite(v)}
    axis.plot(list(finite), list(finite.values()), marker=".")
    axis.axvline(chosen, color="tab:red", linestyle="--", label=f"chosen {chosen:.0f}°")
    axis.set_xlabel("input elevation hypothesis (degrees)")
    axis.set_ylabel("reprojection error (pixels)")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.elevation
    if cfg.value is not None:
        if not cfg.min <= cfg.value <= cfg.max:
            ctx.log.warning("elevation %.1f deg is outside the range estimates are clamped to [%.0f, %.0f]; "
                            "results may be distorted", cfg.value, cfg.min, cfg.max)
        result = {"elevation_deg": cfg.value, "source": "user"}
        atomic_write_json(ctx.out_dir / "elevation.json", result)
        return result
    from img2mesh.elevation.estimate import estimate_elevation
    from img2mesh.elevation.matching import loftr_matches, sift_matches
    from img2mesh.utils.images import white_background_mask

    views = novel_views(ctx)
    masks = [white_background_mask(v / 255.0) for v in views]
    for k, view in enumerate(views):
        atomic_save_image(ctx.out_dir / f"view_{k}.png", view)
    if cfg.matcher == "sift":
        matcher = sift_matches
    else:
        from img2mesh.elevation.weights import loftr_weight

        weights = loftr_weight(cfg.loftr_weights)
        loftr = ctx.models.get("loftr", cfg.loftr_weights, lambda: weights.load(ctx.device), ctx.device)

        def matcher(a, b, ma, mb):
            return loftr_matches(a, b, ma, mb, loftr, ctx.device, cfg.match_size)
    estimate = estimate_elevation(views, masks, matcher, (cfg.search[0], cfg.search[1]), cfg.default,
                                  (cfg.min, cfg.max))
    if estimate.fallback_reason:
        ctx.log.warning("elevation: %s; using the default %.0f deg (pass --elevation DEG to set it)",
                        estimate.fallback_reason, estimate.elevation_deg)
    elif estimate.clamped:
        ctx.log.warning("elevation: the estimate was outside elevation.min..max; clamped to %.0f deg",
                        estimate.elevation_deg)
    else:
        ctx.log.info("elevation: estimated %.0f deg", estimate.elevation_deg)
    result = {
        "elevation_deg": estimate.elevation_deg,
        "source": "default" if estimate.fallback_reason else "estimated",
        "matcher": cfg.matcher,
        "clamped": estimate.clamped,
        "fallback_reason": estimate.fallback_reason,
        "match_counts": estimate.match_counts,
        "error_curve": {f"{k:g}": (v if np.isfinite(v) else None) for k, v in estimate.curve.items()},
    }
    atomic_write_json(ctx.out_dir / "elevation.json", result)
    title = estimate.fallback_reason or f"{sum(estimate.match_counts.values())} matches ({cfg.matcher})"
    atomic_write_bytes(ctx.out_dir / "error_curve.png", plot_curve(estimate.curve, estimate.elevation_deg, title))
    return {k: result[k] for k in ("elevation_deg", "source", "clamped", "fallback_reason", "match_counts")}


def check_config(config: "Config") -> None:
    """The SyncDreamer checkpoint must exist when the elevation is to be estimated with it."""
    from img2mesh.generate.runtime import check_checkpoint

    if config.elevation.value is None:
        check_checkpoint(config)


STAGE = Stage(
    name="elevation",
    description="elevation of the input camera (estimated from Zero123 views, or --elevation DEG)",
    reads=("segment",),
    outputs=("elevation.json",),
    config_keys=("elevation", "generate.model", "generate.random_weights", "generate.checkpoint", "generate.steps",
                 "generate.eta", "generate.input_latent", "generate.precision", "run.seed"),
    run=run,
    models=("syncdreamer", "loftr"),
    check_config=check_config,
    config=ElevationConfig,
    weights=stage_weights,
    report=panel,
)
