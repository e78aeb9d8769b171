"""The generate stage's weights: the SyncDreamer checkpoint (also what ``elevation`` samples with)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from img2mesh.utils.weights import HubFile, HubWeight

if TYPE_CHECKING:
    from img2mesh.pipeline.config import Config
    from img2mesh.utils.weights import WeightFile


def syncdreamer_weight(hub_sources: Sequence[str]) -> HubWeight:
    """The checkpoint, tried at ``generate.hub_sources`` in order."""
    return HubWeight(name="syncdreamer", description="The SyncDreamer checkpoint", used_by="generate, elevation",
                     size="about 5.6 GB", sources=tuple(HubFile.parse(s) for s in hub_sources),
                     path_option="--checkpoint")


def stage_weights(config: "Config") -> Sequence["WeightFile"]:
    return [syncdreamer_weight(config.generate.hub_sources)]
