"""Which parts of SyncDreamer run in reduced precision, and how.

On CUDA with ``fp16``/``bf16`` (``generate.precision``; ``auto`` means fp16 there):

* the denoiser (UNet + depth-wise attention) and the volume nets hold their weights in that dtype,
  so autocast has no float32 master copy to cast (and cache) at every op;
* the denoising loop runs under ``torch.autocast``, which keeps norms, softmax and reductions in
  float32 on top of the reduced-precision matmuls and convolutions;
* the VAE, the CLIP image tower, the camera/frustum geometry and the DDIM update stay float32: the
  sampler encodes and decodes outside the autocast region, and the volume geometry is computed once
  in float32 before the region starts (``SpatialVolumeNet.camera_geometry``).

On the CPU everything is float32 (CPU half-precision kernels are slower than float32 there).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ContextManager, Optional

import torch

if TYPE_CHECKING:
    from img2mesh.generate.model import SyncDreamer

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """The reduced dtype of the denoising loop on one device type (``dtype`` None: float32 throughout)."""

    device_type: str = "cpu"
    dtype: Optional[torch.dtype] = None

    @classmethod
    def for_run(cls, precision: str, device: str) -> "Precision":
        """``generate.precision`` (auto, fp32, fp16, bf16) on ``device`` (cpu, cuda, cuda:N)."""
        device_type = torch.device(device).type
        if device_type != "cuda" or precision == "fp32":
            return cls(device_type, None)
        return cls(device_type, DTYPES.get(precision, torch.float16))  # auto -> fp16

    @property
    def name(self) -> str:
        """``float16``, ``bfloat16`` or ``float32`` (what the manifest records)."""
        return str(self.dtype or torch.float32).removeprefix("torch.")

    def autocast(self) -> ContextManager[None]:
        """The region the denoising loop runs in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def prepare(self, model: "SyncDreamer") -> "SyncDreamer":
        """Freeze every weight and put the denoiser's and volume nets' weights in the reduced dtype."""
        model.requires_grad_(False)
        if self.dtype is not None:
            model.unet.to(self.dtype)
            model.spatial_volume.to(self.dtype)
        return model.eval()


def float32_region(device: torch.device) -> ContextManager[None]:
    """Autocast off for ``device``: geometry computed inside stays float32 whatever the caller enabled."""
    return torch.autocast(device.type, enabled=False)
