"""Time and memory of the enhance stage's RGNV with a full-size SD-2-depth UNet and VAE (random
weights: the cost does not depend on them).

One run inverts and denoises the reference once (2l unguided UNet calls on one latent); one sample
set is 16 views, each inverted for ``l`` steps (unguided) and denoised for ``l`` steps with the
reference's K/V injected and classifier-free guidance (two latents per view and step), ``batch_views``
views per call. This times the reference branch and one chunk of ``batch_views`` views (inversion +
guided injected sampling + VAE decode) and scales the chunk to the 16 views. On a CPU use a small
``--l`` and read the per-call figure; a GPU runs the real ``l`` = 30.

    python benchmarks/enhance.py                      # GPU: fp16, l = 30, 4 views per call
    python benchmarks/enhance.py --device cpu --l 1 --views 1
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

SD2_DEPTH_UNET = dict(sample_size=64, in_channels=5, out_channels=4, layers_per_block=2,
                      block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
                      attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
                      down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def measure(device: torch.device, dtype: torch.dtype, steps: int, l_steps: int, views: int, tiny: bool = False) -> dict:
    """Seconds for one chunk of ``views`` views and for a 16-view set, peak GiB (GPU)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from img2mesh.hifi123.components import tiny_sd2_depth
    from img2mesh.hifi123.rgnv import RGNVSettings, enhance_latents, prepare_reference

    if tiny:
        parts = tiny_sd2_depth()
        unet, vae, latent, context = parts.unet, parts.vae, 8, (1, 8, 16)
    else:
        unet = UNet2DConditionModel(**SD2_DEPTH_UNET)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        latent, context = 64, (1, 77, 1024)
    unet, vae = unet.to(device, dtype).eval(), vae.to(device, dtype).eval()
    alphas = torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2, 0).to(device)
    shape = (views, 4, latent, latent)
    novel, reference = torch.randn(shape, device=device, dtype=dtype), torch.randn(1, *shape[1:], device=device, dtype=dtype)
    depth = torch.rand(views, 1, latent, latent, device=device, dtype=dtype)
    text, uncond = torch.randn(context, device=device, dtype=dtype), torch.randn(context, device=device, dtype=dtype)
    settings = RGNVSettings(steps, l_steps, 0, 10, 9.0)  # the stage's defaults: inject at every step, guided
    reference_s, branch = _timed(device, lambda: prepare_reference(unet, alphas, reference, depth[:1], text, settings))

    def chunk() -> None:
        with torch.no_grad():
            out, _ = enhance_latents(unet, alphas, branch, novel, depth, text, uncond, settings)
            vae.decode(out / 0.18215)

    seconds, _ = _timed(device, chunk)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    calls = l_steps + 2 * l_steps  # per view: l unguided inversion steps, l guided steps of two latents
    return {"reference_s": reference_s, "chunk_s": seconds, "set_s": reference_s + seconds * 16 / views,
            "unet_calls_per_view": calls, "s_per_unet_call": seconds / (calls * views), "peak_gib": peak}


def _timed(device: torch.device, work: Any) -> tuple[float, Any]:
    """(seconds, result) of ``work()``, synchronised on CUDA (peak memory counted from here)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--l", dest="l_steps", type=int, default=30)
    parser.add_argument("--views", type=int, default=4, help="views per UNet call (enhance.batch_views)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    r = measure(device, dtype, args.steps, args.l_steps, args.views)
    print(f"{args.device}: reference branch {r['reference_s']:.1f} s; {args.views} views, l = {args.l_steps}: "
          f"{r['chunk_s']:.1f} s ({r['s_per_unet_call']:.3f} s per view and UNet call, "
          f"{r['unet_calls_per_view']} calls per view); 16 views: {r['set_s']:.0f} s; peak {r['peak_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
