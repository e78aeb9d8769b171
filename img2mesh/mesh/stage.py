"""The mesh stage's declaration (its work lands with the NeuS issue)."""

from __future__ import annotations

from typing import Any, Optional

from img2mesh.errors import StageNotImplementedError
from img2mesh.pipeline.stage import Stage, StageContext


def run(ctx: StageContext) -> Optional[dict[str, Any]]:
    raise StageNotImplementedError("mesh")


STAGE = Stage(
    name="mesh",
    description="marching cubes, largest component, vertex colours, export and previews",
    reads=("reconstruct",),
    outputs=("mesh.*",),
    config_keys=("mesh",),
    publish=("mesh.glb", "mesh.ply", "mesh.obj", "preview.png", "turntable.mp4", "turntable.gif"),
    run=run,
)
