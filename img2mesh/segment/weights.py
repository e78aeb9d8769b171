"""The segment stage's weights: carvekit's Tracer-B7 segmentation and FBA matting checkpoints
(also what ``reconstruct`` uses for the masks of views without alpha)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from img2mesh.errors import WeightsError
from img2mesh.utils.weights import find_weight, no_download_reason

if TYPE_CHECKING:
    from img2mesh.pipeline.config import Config
    from img2mesh.utils.weights import WeightFile

CARVEKIT_HOSTS = ("https://cdn.carve.photos", "https://huggingface.co")  # carvekit's CDN, then its Hub mirror


@dataclass(frozen=True)
class CarvekitWeight:
    """A carvekit checkpoint, fetched and cached by carvekit's own downloader."""

    name: str
    description: str
    used_by: str
    size: str
    filename: str

    def _checkpoints_dir(self) -> Path:
        try:
            from carvekit.ml.files import checkpoints_dir
        except ImportError:
            raise WeightsError("carvekit is not installed; `pip install carvekit` first") from None
        return Path(checkpoints_dir)

    def locate(self) -> Optional[Path]:
        try:
            root = self._checkpoints_dir()
        except WeightsError:
            return None
        hits = sorted(root.rglob(self.filename)) if root.is_dir() else []
        return hits[0] if hits else None

    def download(self) -> Path:
        root = self._checkpoints_dir()
        found = self.locate()
        if found is not None:
            return found
        failure = no_download_reason(CARVEKIT_HOSTS)
        if failure is None:
            import warnings

            from carvekit.utils.download_models import downloader

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # carvekit warns once per mirror it tries
                    return Path(downloader(self.filename))
            except Exception as exc:  # carvekit raises plain ConnectionError and friends
                failure = type(exc).__name__
        raise WeightsError(
            f"{self.description} ({self.filename}, {self.size}): not in carvekit's cache {root} "
            f"and could not be downloaded ({failure}); run `img2mesh weights download {self.name}` "
            f"where there is internet and copy {root} here, or pass an RGBA image or --no-segment"
        )

    def source(self) -> str:
        return f"carvekit's downloader (file {self.filename})"


def remover_weights() -> list[CarvekitWeight]:
    """The background remover's two checkpoints."""
    return [CarvekitWeight("tracer_b7", "carvekit Tracer-B7 segmentation weights", "segment, reconstruct masks",
                           "about 270 MB", "tracer_b7.pth"),
            CarvekitWeight("fba", "carvekit FBA matting weights", "segment, reconstruct masks", "about 140 MB",
                           "fba_matting.pth")]


def remover_weight(name: str) -> CarvekitWeight:
    """``tracer_b7`` or ``fba``."""
    return find_weight(remover_weights(), name)


def stage_weights(config: "Config") -> Sequence["WeightFile"]:
    return remover_weights()
