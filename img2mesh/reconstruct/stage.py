"""The reconstruct stage's declaration (its work lands with the NeuS issue)."""

from __future__ import annotations

from typing import Any, Optional

from img2mesh.errors import StageNotImplementedError
from img2mesh.pipeline.stage import Stage, StageContext


def run(ctx: StageContext) -> Optional[dict[str, Any]]:
    raise StageNotImplementedError("reconstruct")


STAGE = Stage(
    name="reconstruct",
    description="fit a NeuS signed-distance field to the views",
    reads=("generate",),
    outputs=("field.safetensors",),
    config_keys=("reconstruct", "run.seed"),
    run=run,
)
