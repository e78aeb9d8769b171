"""The ``generate`` section of the configuration (with ``generate.feedback``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional, Union

from img2mesh.errors import UsageError
from img2mesh.neus.keys import field_keys_with
from img2mesh.pipeline.config import Section, setting

# generate.num_samples auto makes at most this many sets (HarmonyView's scripts make 2-4, SyncDreamer's
# example 4); reconstruct's --select check reads it too
AUTO_MAX_SETS = 4


# The fast 3D model's field keys: reconstruct's keys (neus.keys), a small model's defaults.
FastFieldKeys = field_keys_with("FastFieldKeys", hidden=64, layers=4, feature_dim=64, color_hidden=64, color_layers=2,
                                hash_levels=8, hash_log2_size=16, samples_per_ray=64)


@dataclass
class FeedbackConfig(FastFieldKeys):  # type: ignore[misc, valid-type]
    """3D-aware feedback during sampling (docs/stages.md: feedback); off while ``steps`` is empty. The
    field keys are reconstruct's (``neus.keys``) at a fast model's widths."""

    steps: list[int] = setting(factory=list, help="DDIM steps (1 = the first) that get feedback; empty = off",
                               minimum=1)
    weight: float = setting(0.5, "how far x̂₀ moves towards the renders where they cover the object",
                            minimum=0.0, maximum=1.0)
    fit_steps: int = setting(100, "NeuS steps per feedback step; each fit continues the previous one", minimum=1)
    rays_per_step: int = setting(1024, "rays per fitting step", minimum=1)
    image_size: int = setting(64, "the predicted views are fitted, and the model rendered, at this size", minimum=1)


@dataclass
class GenerateConfig(Section):
    model: Literal["full", "tiny"] = setting("full", "tiny: the conformance widths, for tests")
    random_weights: bool = setting(False, "an untrained network: tests of the plumbing only")
    checkpoint: Optional[str] = setting(None, "syncdreamer-pretrain.ckpt (--checkpoint); null = the Hugging Face Hub")
    trust_checkpoint: bool = setting(False, "allow unpickling a checkpoint that safe loading refuses")
    hub_sources: list[str] = setting(factory=lambda: [
        "space:liuyuan-pal/SyncDreamer/ckpt/syncdreamer-pretrain.ckpt",
        "model:camenduru/SyncDreamer/syncdreamer-pretrain.ckpt",
    ], help="where the checkpoint is fetched from, tried in order: REPO_TYPE:OWNER/NAME/FILE")
    guidance: Literal["cfg", "harmony"] = setting("harmony", "classifier-free guidance, or HarmonyView's decomposed one")
    cfg_scale: float = setting(2.0, "the cfg guidance scale")
    harmony_scales: list[float] = setting(factory=lambda: [2.0, 1.0], help="HarmonyView's [s1, s2]")
    steps: int = setting(50, "DDIM steps", minimum=1)
    eta: float = setting(1.0, "DDIM eta (1: the official sampler's stochastic steps)")
    num_samples: Union[Literal["auto"], int] = setting("auto", "sample sets; auto: by free GPU memory "
                                                               f"(at most {AUTO_MAX_SETS}), 1 on the CPU", minimum=1)
    batch_views: int = setting(16, "views per UNet batch; halved on CUDA out-of-memory", minimum=1)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = setting("auto", "the denoiser's dtype on CUDA (auto: fp16)")
    input_latent: Literal["sample", "mode"] = setting("sample", "the input's VAE latent: a sample (official) or the mode")
    feedback: FeedbackConfig = dataclasses.field(default_factory=FeedbackConfig)

    def validate(self, prefix: str) -> None:
        if len(self.harmony_scales) != 2:
            raise UsageError(f"config key {prefix}harmony_scales: needs exactly two numbers [s1, s2]")
