"""Generation speed and memory of SyncDreamer (FULL size by default) with random weights.

Times one instance (16 views) per guidance mode and precision and reports seconds per instance and
peak memory. On a GPU it runs the full 50 DDIM steps; on a CPU it times ``--steps`` steps (default
1) and extrapolates to 50, since one full run would take hours there.

    python benchmarks/generate.py                                   # auto device and precision
    python benchmarks/generate.py --precision fp16 bf16 --steps 50  # both reduced precisions on a GPU

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU (what the tensors held at most;
the caching allocator reserves a little more, reported as ``reserved``), the process's peak RSS
on a CPU.
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Callable

import torch

from img2mesh.generate.loading import load_syncdreamer
from img2mesh.generate.model import Guidance, SyncDreamer
from img2mesh.generate.precision import Precision
from img2mesh.generate.sampler import SamplerSettings, decode_views, sample_latents, seeded_randn

GUIDANCES = {"cfg": Guidance("cfg", (2.0,)), "harmony": Guidance("harmony", (2.0, 1.0))}
FULL_STEPS = 50


def peak_memory_gib(device: torch.device) -> tuple[float, float]:
    """(peak allocated, peak reserved) GiB on a GPU; (peak RSS, same) on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, torch.cuda.max_memory_reserved(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, whole process
    return rss, rss


def timed(device: torch.device, work: Callable[[], object]) -> float:
    """Wall seconds of ``work()``, synchronising CUDA around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def load(model_size: str, precision: Precision, device: torch.device) -> SyncDreamer:
    """Random weights, prepared for ``precision`` as a run prepares them, on ``device``."""
    model, _ = load_syncdreamer(model_size, "random")
    return precision.prepare(model).to(device)


def measure(model: SyncDreamer, precision: Precision, guidance: str, steps: int, device: torch.device,
            batch_views: int = 16) -> dict:
    """One instance: encode, ``steps`` DDIM steps, decode; seconds extrapolated to 50 steps, peak memory."""
    image = torch.zeros(1, 3, 256, 256, device=device)
    elevation = torch.full((1,), 0.5236, device=device)
    settings = SamplerSettings(GUIDANCES[guidance], steps, 1.0, batch_views, "sample")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        t_encode = timed(device, lambda: (model.encode_image(image), model.encode_clip(image)))
    latents = []
    t_sample = timed(device, lambda: latents.append(
        sample_latents(model, image, elevation, settings, seeded_randn(0, device), precision=precision)))
    t_decode = timed(device, lambda: decode_views(model, latents[0]))
    per_step = max(t_sample - t_encode, 0.0) / steps  # sample_latents encodes the input once too
    allocated, reserved = peak_memory_gib(device)
    return {"guidance": guidance, "precision": precision.name, "steps": steps, "encode_s": t_encode,
            "s_per_step": per_step, "decode_s": t_decode,
            "s_per_instance": t_encode + FULL_STEPS * per_step + t_decode,
            "peak_gib": allocated, "reserved_gib": reserved,
            "finite": bool(torch.isfinite(latents[0]).all())}


def measure_feedback(model: SyncDreamer, device: torch.device, fit_steps: int = 100, image_size: int = 64) -> dict:
    """Seconds of two feedback operations (``generate.feedback``) on one set of random latents: the
    first (hull start + fit) and the second (warm-started fit), each with decode, render and encode."""
    from img2mesh.app import load_config
    from img2mesh.feedback.operator import FeedbackSettings, SamplingFeedback

    config = load_config(overrides=["generate.feedback.steps=[1, 2]", f"generate.feedback.fit_steps={fit_steps}",
                                    f"generate.feedback.image_size={image_size}"])
    hook = SamplingFeedback(model, FeedbackSettings.from_config(config), 1, 0, device)
    c = model.config
    generator = torch.Generator(device=device).manual_seed(0)
    x_t = torch.randn(1, c.view_num, c.vae.z_channels, c.latent_size, c.latent_size, generator=generator,
                      device=device)
    noise = torch.randn(x_t.shape, generator=generator, device=device)
    alpha = model.alphas_cumprod[500].float()
    cold = timed(device, lambda: hook(0, x_t, noise, alpha))
    warm = timed(device, lambda: hook(1, x_t, noise, alpha))
    return {"first_s": cold, "warm_s": warm, "fit_steps": fit_steps, "image_size": image_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="full", choices=["full", "tiny"])
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps to time (default: 50 on CUDA, 1 on CPU)")
    parser.add_argument("--batch-views", type=int, default=16)
    parser.add_argument("--guidance", nargs="+", default=list(GUIDANCES), choices=list(GUIDANCES))
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    steps = args.steps or (FULL_STEPS if device.type == "cuda" else 1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{'device':24s} {'guidance':9s} {'precision':9s} {'steps':>5s} {'encode s':>8s} {'s/step':>7s} "
          f"{'decode s':>8s} {'s/instance(50)':>14s} {'peak GiB':>8s} {'reserved':>8s}")
    for requested in args.precision:
        precision = Precision.for_run(requested, str(device))
        model = load(args.model, precision, device)
        for guidance in args.guidance:
            r = measure(model, precision, guidance, steps, device, args.batch_views)
            print(f"{name:24s} {guidance:9s} {r['precision']:9s} {steps:5d} {r['encode_s']:8.2f} "
                  f"{r['s_per_step']:7.2f} {r['decode_s']:8.2f} {r['s_per_instance']:14.1f} "
                  f"{r['peak_gib']:8.2f} {r['reserved_gib']:8.2f}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
