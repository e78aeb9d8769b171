"""The generate stage's declaration (its work lands with the SyncDreamer issue)."""

from __future__ import annotations

from typing import Any, Optional

from img2mesh.errors import StageNotImplementedError
from img2mesh.pipeline.stage import Stage, StageContext


def run(ctx: StageContext) -> Optional[dict[str, Any]]:
    raise StageNotImplementedError("generate")


STAGE = Stage(
    name="generate",
    description="16 synchronized 256x256 views at the SyncDreamer cameras",
    reads=("segment", "elevation"),
    outputs=("sample_0/*.png", "cameras.json"),
    config_keys=("generate", "run.seed"),
    run=run,
)
