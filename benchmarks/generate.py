"""Generation speed and memory of the FULL-size SyncDreamer with random weights.

Times one instance (16 views) per guidance mode and reports seconds per instance and peak memory.
On a GPU it runs the full 50 DDIM steps; on a CPU it times ``--steps`` steps (default 1) and
extrapolates to 50, since one full run would take hours there.

    python benchmarks/generate.py                       # auto device, fp32 on CPU, fp16 on CUDA
    python benchmarks/generate.py --precision bf16 --steps 50
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from img2mesh.generate.loading import load_syncdreamer
from img2mesh.generate.model import Guidance
from img2mesh.generate.sampler import SamplerSettings, decode_views, sample_latents, seeded_randn
from img2mesh.generate.stage import precision_scope

GUIDANCES = {"cfg": Guidance("cfg", (2.0,)), "harmony": Guidance("harmony", (2.0, 1.0))}
FULL_STEPS = 50


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, whole process


def timed(device: torch.device, work) -> float:
    """Wall seconds of ``work()``, synchronising CUDA around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="full", choices=["full", "tiny"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps to time (default: 50 on CUDA, 1 on CPU)")
    parser.add_argument("--batch-views", type=int, default=16)
    parser.add_argument("--guidance", nargs="+", default=list(GUIDANCES), choices=list(GUIDANCES))
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    steps = args.steps or (FULL_STEPS if device.type == "cuda" else 1)
    start = time.perf_counter()
    model, _ = load_syncdreamer(args.model, "random")
    model = model.to(device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"model {args.model}, precision {args.precision}, built in {time.perf_counter() - start:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters")
    image = torch.zeros(1, 3, 256, 256, device=device)
    elevation = torch.full((1,), 0.5236, device=device)
    print(f"{'guidance':10s} {'steps timed':>11s} {'encode s':>9s} {'s/step':>8s} {'decode s':>9s} "
          f"{'s/instance (50 steps)':>22s} {'peak GiB':>9s}")
    for name in args.guidance:
        settings = SamplerSettings(GUIDANCES[name], steps, 1.0, args.batch_views, "sample")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad():
            t_encode = timed(device, lambda: (model.encode_image(image), model.encode_clip(image)))
        with precision_scope(args.precision, str(device)):
            t_sample = timed(device, lambda: sample_latents(model, image, elevation, settings, seeded_randn(0, device)))
        latents = torch.zeros(1, 16, 4, 32, 32, device=device)
        t_decode = timed(device, lambda: decode_views(model, latents))
        per_step = (t_sample - t_encode) / steps  # sample_latents encodes the input once too
        per_instance = t_encode + FULL_STEPS * per_step + t_decode
        print(f"{name:10s} {steps:11d} {t_encode:9.2f} {per_step:8.2f} {t_decode:9.2f} {per_instance:22.1f} "
              f"{peak_memory_gib(device):9.2f}")


if __name__ == "__main__":
    main()
