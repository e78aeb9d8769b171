"""SD-2-depth's parts as HiFi-123 uses them: loading (or tiny random stand-ins for tests),
the text embedding, the masked depth condition, and the VAE's encode/decode.

``StableDiffusionDepth2ImgPipeline`` holds the same parts but has no inversion; RGNV needs the
parts themselves (``hifi123/rgnv.py``). Everything is loaded from safetensors: nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class DepthDiffusion:
    """The networks of a depth-conditioned Stable Diffusion and the numbers that go with them."""

    unet: Any  # diffusers UNet2DConditionModel with 5 input channels (latent + depth)
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel (OpenCLIP ViT-H's text tower)
    tokenizer: Any
    depth_estimator: Any  # transformers DPTForDepthEstimation
    depth_processor: Any  # its DPTImageProcessor
    alphas_cumprod: torch.Tensor
    dtype: torch.dtype = torch.float32
    v_prediction: bool = False  # the scheduler config's prediction_type (SD-2-depth, from 2-base: epsilon)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device: str) -> "DepthDiffusion":
        for net in (self.unet, self.vae, self.text_encoder, self.depth_estimator):
            net.to(device)
        return self

    @torch.no_grad()
    def embed_text(self, prompt: str) -> torch.Tensor:
        """(1, L, D): the text encoder's last hidden state of ``prompt`` padded to the model's length."""
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.unet.device)).last_hidden_state.to(self.dtype)

    @torch.no_grad()
    def depth(self, images: np.ndarray, masks: np.ndarray, latent_size: int) -> torch.Tensor:
        """(N, 1, s, s) depth condition of N uint8 views (N, H, W, 3) with foreground ``masks``: DPT's
        relative inverse depth at the latent's size, normalised by :func:`normalise_depth`."""
        pixels = self.depth_processor(images=list(images), return_tensors="pt").pixel_values
        device = self.depth_estimator.device
        predicted = self.depth_estimator(pixels.to(device, self.depth_estimator.dtype)).predicted_depth.float()
        depth = F.interpolate(predicted[:, None], size=(latent_size, latent_size), mode="bicubic", align_corners=False)
        fg = F.interpolate(torch.from_numpy(masks.astype(np.float32))[:, None].to(device),
                           size=(latent_size, latent_size), mode="area") > 0.5
        return normalise_depth(depth, fg).to(self.dtype)

    def encode(self, images: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> scaled latents (the posterior's mean: inversion wants no noise);
        ``grad``: keep the graph back to ``images`` (RGSD's z₀(θ), whose gradient reaches the texture)."""
        with torch.set_grad_enabled(grad):
            latent = self.vae.encode(images.to(self.vae.device, self.vae.dtype)).latent_dist.mean
            return latent * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> (N, 3, H, W) images in [-1, 1] (float32)."""
        return self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample.float().clamp(-1, 1)


FAR_GAP = 0.1  # the object's farthest point sits this far (of the [-1, 1] range) in front of the background


def normalise_depth(inverse_depth: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """SD-2-depth's depth condition from inverse depth (N, 1, s, s; larger is nearer) and the object's
    mask: the object spans [-1 + 2·FAR_GAP, 1] (nearest at 1) and the background is -1, strictly
    behind every object pixel (the official code masks the background to the farthest value too;
    scaling over the object alone gave its far side the background's value)."""
    out = torch.full_like(inverse_depth, -1.0)
    low = -1.0 + 2 * FAR_GAP
    for i in range(len(inverse_depth)):
        values = inverse_depth[i][foreground[i]]
        if values.numel() == 0:
            continue
        span = values.max() - values.min()
        if span > 0:
            scaled = low + (1.0 - low) * (inverse_depth[i] - values.min()) / span
        else:  # a flat object: all of it as near as it gets
            scaled = torch.ones_like(inverse_depth[i])
        out[i] = torch.where(foreground[i], scaled.clamp(low, 1.0), torch.full_like(scaled, -1.0))
    return out


def load_sd2_depth(folder: Path, dtype: torch.dtype) -> DepthDiffusion:
    """SD-2-depth from a local copy of its repository (``img2mesh weights download sd2_depth``)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer, DPTForDepthEstimation, DPTImageProcessor

    def part(cls: Any, sub: str, **kwargs: Any) -> Any:
        return cls.from_pretrained(folder, subfolder=sub, use_safetensors=True, **kwargs).eval().requires_grad_(False)

    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    return DepthDiffusion(
        unet=part(UNet2DConditionModel, "unet", torch_dtype=dtype),
        vae=part(AutoencoderKL, "vae", torch_dtype=dtype),
        text_encoder=part(CLIPTextModel, "text_encoder", torch_dtype=dtype),
        tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        # DPT-Hybrid has batch norms that misbehave in half precision: it stays float32
        depth_estimator=part(DPTForDepthEstimation, "depth_estimator"),
        depth_processor=DPTImageProcessor.from_pretrained(folder, subfolder="feature_extractor"),
        alphas_cumprod=scheduler.alphas_cumprod.float(), dtype=dtype,
        v_prediction=scheduler.config.prediction_type == "v_prediction")


TINY_LATENT = 8  # latent side of the tiny model (images of 64 px)
TINY_TEXT = 8  # tokens


def tiny_unet() -> Any:
    """A random UNet laid out as SD-2-depth's (5 input channels) at toy widths."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=TINY_LATENT, in_channels=5, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=8, norm_num_groups=8).eval()


def tiny_sd2_depth(seed: int = 0) -> DepthDiffusion:
    """Random toy-width parts wired exactly as SD-2-depth's (tests of the plumbing; no file is read)."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        DPTConfig,
        DPTForDepthEstimation,
        DPTImageProcessor,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(seed)
    words = ["[UNK]", "<s>", "</s>", *"a object photo of the high quality detailed".split()]
    tokens = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokens.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokens, unk_token="[UNK]", pad_token="</s>",
                                        model_max_length=TINY_TEXT)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=TINY_TEXT, bos_token_id=1,
                                        eos_token_id=2, pad_token_id=2)).eval()
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=8 * TINY_LATENT).eval()
    depth = DPTForDepthEstimation(DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                            intermediate_size=64, image_size=32, patch_size=8,
                                            backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 16, 16],
                                            fusion_hidden_size=16, is_hybrid=False)).eval()
    processor = DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False,
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    unet = tiny_unet()
    for net in (unet, vae, text, depth):  # frozen, as the loaded model is: gradients reach only what refine optimises
        net.requires_grad_(False)
    return DepthDiffusion(unet, vae, text, tokenizer, depth, processor, scheduler.alphas_cumprod.float())
