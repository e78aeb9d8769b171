"""Time and memory of the refine stage's RGSD iterations with a full-size SD-2-depth UNet and VAE
(random weights: the cost does not depend on them), on a textured sphere.

The loop is the stage's own (``refine.rgsd.TextureRefiner`` with distillation on, the photo's loss,
the alternating schedule: even iterations a fixed camera's stored target, odd ones a random camera
inverted for l steps and denoised with the reference injected down to τ). This times ``--iterations``
of them after the reference branch is prepared once, and extrapolates to the stage's 1000
(iterations alternate, so an even count is a fair sample of the schedule).

    python benchmarks/refine_cost.py                        # GPU: fp16, 512², T = 20, l = 12, 40 iterations
    python benchmarks/refine_cost.py --device cpu --tiny --iterations 4
"""

from __future__ import annotations

import argparse
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from enhance import SD2_DEPTH_UNET

if TYPE_CHECKING:
    from img2mesh.hifi123.components import DepthDiffusion


def random_parts(device: torch.device, dtype: torch.dtype, tiny: bool) -> tuple["DepthDiffusion", tuple[int, ...]]:
    """SD-2-depth's UNet and VAE with random weights (or the tiny test parts) and the text shape."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from img2mesh.hifi123.components import DepthDiffusion, tiny_sd2_depth

    if tiny:
        parts = tiny_sd2_depth()
        unet, vae, context = parts.unet, parts.vae, (1, 8, 16)
    else:
        unet = UNet2DConditionModel(**SD2_DEPTH_UNET)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        context = (1, 77, 1024)
    alphas = torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2, 0)
    model = DepthDiffusion(unet.to(device, dtype).eval(), vae.to(device, dtype).eval(), None, None, None, None,
                           alphas.to(device), dtype)
    return model, context


def measure(device: torch.device, dtype: torch.dtype, iterations: int, tiny: bool = False, size: int = 512,
            steps: int = 20, l_steps: int = 12, guidance: float = 7.5) -> dict:
    """Seconds for the reference branch and per iteration, extrapolated to 1000 iterations; peak GiB (GPU)."""
    import trimesh

    from img2mesh.hifi123.distillation import latent_of
    from img2mesh.hifi123.rgnv import RGNVSettings, prepare_reference
    from img2mesh.hifi123.runtime import Prompts
    from img2mesh.mesh.texture import texture_mesh
    from img2mesh.refine.render import TexturedMesh, camera_pool, rasterise, render
    from img2mesh.refine.rgsd import RGSDSettings, Scene, TextureRefiner
    from img2mesh.utils import cameras

    torch.manual_seed(0)
    size = 64 if tiny else size
    model, context = random_parts(device, dtype, tiny)
    textured, _ = texture_mesh(trimesh.creation.icosphere(subdivisions=4, radius=0.35), 512,
                               lambda p: np.clip(np.asarray(p) + 0.5, 0, 1), torch.device("cpu"))
    mesh = TexturedMesh(np.asarray(textured.vertices), np.asarray(textured.faces), np.asarray(textured.visual.uv),
                        np.asarray(textured.visual.material.baseColorTexture.convert("RGB")))
    K = cameras.intrinsics(size)
    pool = [rasterise(mesh, k, pose, size, device) for k, pose in camera_pool(32, size, 0)]
    fixed = [rasterise(mesh, K, cameras.target_poses()[v], size, device) for v in (0, 4, 8, 12)]
    photo_camera = rasterise(mesh, K, cameras.look_at_pose(0.0, math.radians(30)), size, device)
    start = torch.from_numpy(np.array(mesh.texture)).float().div(255).permute(2, 0, 1)[None].to(device)
    photo = render(start, photo_camera).detach()
    text, empty = torch.randn(context, device=device, dtype=dtype), torch.randn(context, device=device, dtype=dtype)
    conditions = Prompts(empty, text, empty)
    rgnv = RGNVSettings(steps, l_steps, 0, 12 if not tiny else 1, guidance)
    latent = size // model.vae_factor
    reference_s, branch = _timed(device, lambda: prepare_reference(
        model.unet, model.alphas_cumprod, latent_of(model, photo, grad=False), torch.zeros(
            1, 1, latent, latent, device=device, dtype=dtype), conditions.reference, rgnv))
    targets = torch.randn(len(fixed), 4, latent, latent, device=device)
    scene = Scene(pool, fixed, targets, photo_camera, photo, branch, conditions)
    refiner = TextureRefiner(mesh.texture, RGSDSettings(iterations, 0.01, 1.0, True, iterations + 1, 0), device)
    seconds, _ = _timed(device, lambda: refiner.run(model, scene, rgnv))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    per_iteration = seconds / iterations
    return {"reference_s": reference_s, "s_per_iteration": per_iteration, "iterations_per_s": 1 / per_iteration,
            "s_per_1000": reference_s + 1000 * per_iteration, "peak_gib": peak, "size": size,
            "loss_first": refiner.history[0]["loss"], "loss_last": refiner.history[-1]["loss"]}


def _timed(device: torch.device, work) -> tuple[float, object]:
    """(seconds, result) of ``work()``, synchronised on CUDA (peak memory counted from here)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--tiny", action="store_true", help="the tiny random test parts at 64² (CPU rehearsal)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    r = measure(device, dtype, args.iterations, args.tiny)
    print(f"{args.device}: {r['size']}², reference branch {r['reference_s']:.1f} s, {r['s_per_iteration']:.2f} s per "
          f"iteration ({r['iterations_per_s']:.2f} it/s); 1000 iterations: {r['s_per_1000'] / 60:.1f} min; "
          f"peak {r['peak_gib']:.2f} GiB; loss {r['loss_first']:.4f} -> {r['loss_last']:.4f}")


if __name__ == "__main__":
    main()
