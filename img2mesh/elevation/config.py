"""The ``elevation`` section of the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from img2mesh.errors import UsageError
from img2mesh.pipeline.config import Section, setting


@dataclass
class ElevationConfig(Section):
    # Beyond +-90 degrees the camera is not above or below the object but upside down behind it.
    value: Optional[float] = setting(None, "degrees, -90 to 90; set (or --elevation) to skip estimation")
    default: float = setting(30.0, "used with a warning when estimation finds too few matches")
    min: float = setting(-10.0, "estimates are clamped to [min, max] (a conservative range around SyncDreamer's "
                                "examples; its paper states none)")
    max: float = setting(40.0, "high end of the range estimates are clamped to")
    search: list[float] = setting(factory=lambda: [-20.0, 60.0],
                                  help="[low, high] hypotheses: 10 degree steps, then 1 around the best")
    matcher: Literal["loftr", "sift"] = setting("loftr", "feature matcher between the Zero123-mode views")
    loftr_weights: Literal["indoor_new", "outdoor"] = setting("indoor_new", "LoFTR variant (One-2-3-45's choice)")
    match_size: int = setting(480, "views are matched as grey images of this size (One-2-3-45: 480)", minimum=1)
    cfg_scale: float = setting(3.0, "guidance of the four Zero123-mode views (One-2-3-45: 3)")

    def validate(self, prefix: str) -> None:
        if self.value is not None and not -90.0 <= self.value <= 90.0:
            raise UsageError(f"config key {prefix}value: an elevation from -90 to 90 degrees, got {self.value:g}")
        if len(self.search) != 2 or self.search[0] >= self.search[1]:
            raise UsageError(f"config key {prefix}search: needs [low, high] with low < high")
