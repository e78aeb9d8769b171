"""The elevation stage's weights: kornia's LoFTR matcher (the SyncDreamer checkpoint is generate's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from img2mesh.errors import WeightsError
from img2mesh.utils.weights import no_download_reason

if TYPE_CHECKING:
    import torch

    from img2mesh.pipeline.config import Config
    from img2mesh.utils.weights import WeightFile

LOFTR_HOSTS = ("https://huggingface.co", "https://cmp.felk.cvut.cz")  # kornia's two URLs per variant
LOFTR_FILES = {"indoor_new": "loftr_indoor_ds_new.ckpt", "outdoor": "loftr_outdoor.ckpt"}


@dataclass(frozen=True)
class LoftrWeight:
    """kornia's LoFTR weights (``indoor_new``, One-2-3-45's, or ``outdoor``), cached by kornia (torch.hub)."""

    name: str = "loftr"
    variant: str = "indoor_new"
    used_by: str = "elevation (matcher: loftr)"
    size: str = "about 45 MB"

    @property
    def description(self) -> str:
        return f"kornia LoFTR {self.variant} matcher weights"

    @property
    def filename(self) -> str:
        return LOFTR_FILES[self.variant]

    def locate(self) -> Optional[Path]:
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / self.filename
        return path if path.is_file() else None

    def load(self, device: str) -> "torch.nn.Module":
        """The matcher with its weights (downloaded by kornia when missing)."""
        try:
            from kornia.feature import LoFTR
        except ImportError:
            raise WeightsError("the loftr matcher needs kornia (`pip install kornia`); "
                               "or use --set elevation.matcher=sift") from None
        why = None if self.locate() is not None else no_download_reason(LOFTR_HOSTS)
        if why is None:
            try:
                return LoFTR(pretrained=self.variant).to(device).eval().requires_grad_(False)
            except Exception as exc:  # network errors surface as many types through torch.hub
                why = type(exc).__name__
        import torch

        raise WeightsError(
            f"{self.description} ({self.filename}, {self.size}) are not in torch.hub's cache "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'} and could not be downloaded "
            f"({why}); run `img2mesh weights download {self.name}` where there is internet "
            f"and copy that folder here, or use --set elevation.matcher=sift")

    def download(self) -> Path:
        self.load("cpu")
        return self.locate() or Path(self.filename)

    def source(self) -> str:
        return f"kornia's loader (file {self.filename})"


def loftr_weight(variant: str) -> LoftrWeight:
    """``indoor_new`` (elevation.loftr_weights, One-2-3-45's) or ``outdoor``."""
    if variant == "indoor_new":
        return LoftrWeight()
    return LoftrWeight("loftr_outdoor", "outdoor", "elevation (elevation.loftr_weights: outdoor)")


def stage_weights(config: "Config") -> Sequence["WeightFile"]:
    return [loftr_weight("indoor_new"), loftr_weight("outdoor")]
