"""Background removal with carvekit: Tracer-B7 segmentation, then FBA matting on a trimap.

The same settings as SyncDreamer's own ``foreground_segment.py`` (carvekit's ``HiInterface`` for
objects), but built from carvekit's parts so that the weights can be its pretrained ones (fetched
and cached by carvekit's downloader) or untrained ones for tests. The run's model cache keeps the
networks across the inputs of a batch (parked on the CPU while the other stages run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from img2mesh.segment.weights import remover_weight

if TYPE_CHECKING:
    from PIL import Image

    from img2mesh.pipeline.contract import ModelCache

# carvekit's HiInterface defaults for object_type="object", which SyncDreamer uses.
TRIMAP_PROB_THRESHOLD = 231
TRIMAP_DILATION = 30
TRIMAP_EROSION_ITERS = 5
MIN_CARVEKIT_SIDE = 32


@dataclass(frozen=True)
class RemoverSettings:
    """What a loaded background remover depends on (the cache key)."""

    device: str
    random_weights: bool
    seg_size: int
    matting_size: int

    @property
    def fp16(self) -> bool:
        return self.device.startswith("cuda")


class BackgroundRemover:
    """carvekit's segmentation + matting pipeline, callable on a list of RGB images."""

    def __init__(self, settings: RemoverSettings) -> None:
        import torch
        from carvekit.api.interface import Interface
        from carvekit.ml.wrap.fba_matting import FBAMatting
        from carvekit.ml.wrap.tracer_b7 import TracerUniversalB7
        from carvekit.pipelines.postprocessing import MattingMethod
        from carvekit.trimap.generator import TrimapGenerator

        pretrained = not settings.random_weights
        if pretrained:
            # Fetch (or find) both files first: a missing file then fails with our message,
            # not with a network traceback from inside carvekit.
            tracer_path = remover_weight("tracer_b7").download()
            remover_weight("fba").download()
        else:
            # carvekit resolves (downloads) the path even when told not to load it; a path that
            # is never opened keeps it offline.
            tracer_path = "untrained"
            torch.manual_seed(0)  # untrained weights, but the same ones every time
        segmentation = TracerUniversalB7(device=settings.device, input_image_size=settings.seg_size,
                                         batch_size=1, load_pretrained=pretrained, fp16=settings.fp16,
                                         model_path=tracer_path)
        matting = FBAMatting(device=settings.device, input_tensor_size=settings.matting_size,
                             batch_size=1, load_pretrained=pretrained, fp16=settings.fp16)
        trimap = TrimapGenerator(prob_threshold=TRIMAP_PROB_THRESHOLD, kernel_size=TRIMAP_DILATION,
                                 erosion_iters=TRIMAP_EROSION_ITERS)
        self.settings = settings
        self._networks = (segmentation, matting)
        for network in self._networks:
            network.requires_grad_(False)
        self._interface = Interface(
            seg_pipe=segmentation,
            post_pipe=MattingMethod(matting_module=matting, trimap_generator=trimap, device=settings.device),
            device=settings.device,
        )

    def __call__(self, images: list["Image.Image"]) -> list["Image.Image"]:
        """RGB images -> RGBA cut-outs of the same size."""
        import torch
        from PIL import Image

        # carvekit refuses images of 32 px or less on a side: enlarge those, then shrink the result.
        factors = [1 + MIN_CARVEKIT_SIDE // min(im.size) for im in images]
        inputs = [im.convert("RGB").resize((im.width * f, im.height * f), Image.BICUBIC) if f > 1
                  else im.convert("RGB") for im, f in zip(images, factors)]
        with torch.inference_mode():
            results = self._interface(inputs)
        return [res.convert("RGBA").resize(im.size, Image.BICUBIC) if res.size != im.size else res.convert("RGBA")
                for res, im in zip(results, images)]


    def to(self, device: str) -> "BackgroundRemover":
        """Move both networks (carvekit keeps its own device attribute for the inputs, which stays)."""
        for network in self._networks:
            network.to(device)
        return self


MODEL_NAME = "carvekit"  # what the segment stage names in Stage.models


def get_remover(settings: RemoverSettings, models: "ModelCache") -> BackgroundRemover:
    """A loaded remover for these settings from the run's model cache (a batch shares it)."""
    try:
        import carvekit  # noqa: F401
    except ImportError:
        from img2mesh.errors import StageError

        raise StageError("background removal needs carvekit (`pip install carvekit`), "
                         "or pass an RGBA image or --no-segment") from None
    return models.get(MODEL_NAME, settings, lambda: BackgroundRemover(settings), settings.device)
