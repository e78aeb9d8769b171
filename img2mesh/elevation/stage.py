"""The elevation stage: ``--elevation DEG`` is honoured now; estimation lands with its own issue."""

from __future__ import annotations

from typing import Any, Optional

from img2mesh.errors import StageNotImplementedError
from img2mesh.pipeline.stage import Stage, StageContext
from img2mesh.utils.files import atomic_write_json


def run(ctx: StageContext) -> Optional[dict[str, Any]]:
    cfg = ctx.config.elevation
    if cfg.value is None:
        raise StageNotImplementedError("elevation", "pass --elevation DEG to give the elevation")
    if not cfg.min <= cfg.value <= cfg.max:
        ctx.log.warning(
            "elevation %.1f deg is outside SyncDreamer's trained range [%.0f, %.0f]; results may be distorted",
            cfg.value, cfg.min, cfg.max,
        )
    result = {"elevation_deg": cfg.value, "source": "user"}
    atomic_write_json(ctx.out_dir / "elevation.json", result)
    return result


STAGE = Stage(
    name="elevation",
    description="elevation of the input camera (estimated, or --elevation DEG)",
    reads=("segment",),
    outputs=("elevation.json",),
    config_keys=("elevation",),
    run=run,
)
