"""SyncDreamer for a running stage (generate, elevation): the model from the run's model cache, in
the run's precision, and the segment stage's input image as the model wants it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from img2mesh.generate.config import AUTO_MAX_SETS

if TYPE_CHECKING:
    import torch

    from img2mesh.generate.loading import LoadedWeights
    from img2mesh.generate.model import SyncDreamer
    from img2mesh.generate.precision import Precision
    from img2mesh.pipeline.config import Config
    from img2mesh.pipeline.contract import StageContext

MODEL_NAME = "syncdreamer"  # what the stages that use it name in Stage.models
# Free GPU memory one more sample set needs, once the weights are loaded: the activations of
# 16 views x 3 guidance branches per UNet chunk grow linearly with the sets (README: VRAM per preset;
# an estimate from the 10 GB one-set goal, not a GPU measurement). Too low an estimate is caught by
# the out-of-memory retry, which halves generate.batch_views.
AUTO_GIB_PER_SET = 8.0


@dataclass
class LoadedSyncDreamer:
    """A loaded, frozen SyncDreamer with where its weights came from and the precision it was prepared for."""

    model: "SyncDreamer"
    weights: "LoadedWeights"
    precision: "Precision"

    def to(self, device: str) -> "LoadedSyncDreamer":
        """Move the network (the model cache parks it on the CPU between the inputs of a batch)."""
        self.model.to(device)
        return self


def syncdreamer(ctx: "StageContext") -> LoadedSyncDreamer:
    """The model for this run's settings and device, loaded once and shared by the stages that use it."""
    from img2mesh.generate.loading import load_syncdreamer
    from img2mesh.generate.precision import Precision

    cfg = ctx.config.generate
    precision = Precision.for_run(cfg.precision, ctx.device)
    weights = "random" if cfg.random_weights else "pretrained"
    key = (cfg.model, weights, cfg.checkpoint, tuple(cfg.hub_sources), cfg.trust_checkpoint, precision.name)

    def load() -> LoadedSyncDreamer:
        ctx.log.info("%s: loading SyncDreamer (%s, %s weights) on %s, denoiser in %s", ctx.stage, cfg.model,
                     weights, ctx.device, precision.name)
        model, loaded = load_syncdreamer(cfg.model, weights, cfg.checkpoint, cfg.hub_sources,
                                         cfg.trust_checkpoint)
        # cast before moving: the float32 copy of the denoiser never reaches the GPU
        return LoadedSyncDreamer(precision.prepare(model).to(ctx.device), loaded, precision)

    return ctx.models.get(MODEL_NAME, key, load, ctx.device)


def sample_sets(requested: "int | str", device: "torch.device", free_bytes: "int | None" = None) -> int:
    """How many sample sets to generate: ``requested``, or for ``auto`` as many as the GPU's free
    memory holds (at most :data:`AUTO_MAX_SETS`; one on the CPU, where every set costs minutes).

    ``free_bytes`` is the device's free memory (read from CUDA when not given).
    """
    import torch

    if requested != "auto":
        return int(requested)
    if device.type != "cuda":
        return 1
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return max(1, min(AUTO_MAX_SETS, int(free_bytes / 2**30 // AUTO_GIB_PER_SET)))


def check_checkpoint(config: "Config") -> None:
    """A ``generate.checkpoint`` (``--checkpoint``) that is not a file is a usage error before anything runs."""
    from pathlib import Path

    from img2mesh.errors import UsageError

    checkpoint = config.generate.checkpoint
    if checkpoint is None or config.generate.random_weights:
        return
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise UsageError(f"checkpoint file {checkpoint} does not exist")
    kind = checkpoint_kind(path)
    if kind is None:
        raise UsageError(f"checkpoint file {checkpoint} is not a checkpoint: neither a PyTorch archive (.ckpt/.pt) nor "
                         f"safetensors (SyncDreamer's is syncdreamer-pretrain.ckpt, 5.6 GB)")


def checkpoint_kind(path: "os.PathLike[str]") -> "str | None":
    """What a weights file is by its first bytes: "zip" (torch.save's archive, Lightning's .ckpt),
    "pickle" (torch's legacy format), "safetensors", or None for anything else (text, an image, ...).
    Nothing is unpickled."""
    import struct

    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # a pickle's PROTO opcode
        return "pickle"
    if len(head) >= 9:
        (header,) = struct.unpack("<Q", head[:8])
        if 2 <= header < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return None


def check_config(config: "Config") -> None:
    """The generate stage's usage errors before anything runs: the checkpoint, and feedback at a DDIM
    step the run does not take."""
    from img2mesh.errors import UsageError

    check_checkpoint(config)
    cfg = config.generate
    beyond = [step for step in cfg.feedback.steps if step > cfg.steps]
    if beyond:
        raise UsageError(f"config key generate.feedback.steps: step {beyond[0]} is beyond generate.steps "
                         f"({cfg.steps})")


def input_image(ctx: "StageContext") -> "torch.Tensor":
    """The segment stage's 256x256 input, composited on white in float as the official code does: 1,3,H,W in [-1, 1]."""
    import torch
    from PIL import Image

    from img2mesh.utils.images import composite_on_white

    on_white = composite_on_white(Image.open(ctx.stage_dir("segment") / "input_rgba.png"))
    return torch.from_numpy(on_white * 2.0 - 1.0).permute(2, 0, 1)[None].float().to(ctx.device)
