"""The ``segment`` section of the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from img2mesh.errors import UsageError
from img2mesh.pipeline.config import Section, setting


@dataclass
class SegmentConfig(Section):
    use_alpha: Literal["auto", "always", "never"] = setting("auto", "use the input's own alpha instead of carvekit "
                                                                    "(auto: when it has a meaningful one)")
    crop_size: int = setting(200, "larger side of the object in the 256x256 input; -1 = only pad to square")
    max_pixels: int = setting(100_000_000, "refuse larger inputs before decoding them (decompression bombs)",
                              minimum=1)
    random_weights: bool = setting(False, "untrained carvekit networks: tests of the plumbing only")
    seg_size: int = setting(640, "Tracer-B7 input size", minimum=1)
    matting_size: int = setting(2048, "FBA matting input size", minimum=1)

    def validate(self, prefix: str) -> None:
        if not (self.crop_size == -1 or 1 <= self.crop_size <= 256):
            raise UsageError(f"config key {prefix}crop_size: must be -1 or 1..256, got {self.crop_size}")
