"""The segment stage's declaration (its work lands with the segmentation issue)."""

from __future__ import annotations

from typing import Any, Optional

from img2mesh.errors import StageNotImplementedError
from img2mesh.pipeline.stage import Stage, StageContext


def run(ctx: StageContext) -> Optional[dict[str, Any]]:
    raise StageNotImplementedError("segment")


STAGE = Stage(
    name="segment",
    description="remove the background and recentre the object on a 256x256 white image",
    reads=(),
    outputs=("rgba.png", "input.png"),
    config_keys=("segment",),
    run=run,
)
