"""Depth-wise attention: img2mesh's folded matmuls against the official 6-D products, side by side.

At the full model's finest level (32x32 latents, context 64 channels x 48 depths, 4 heads of 32,
queries of 320 channels) with 16 views x 3 HarmonyView branches = 48 at once, the official
formulation forms two (48, 4, 32, 48, 32, 32) tensors, 1.2 GB each in float32. Each variant runs
in its own process (peak RSS is per process); the table gives seconds, the extra peak memory over
the inputs, and the largest difference between the two outputs.

    python benchmarks/depth_attention.py            # batch 48, float32, CPU
    python benchmarks/depth_attention.py --batch 16 --device cuda --dtype float16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from img2mesh.generate.unet import DepthAttention


def official(attention: DepthAttention, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The official formulation: k and v by convolution, then the two 6-D products."""
    b, _, h, w = x.shape
    d = context.shape[2]
    hn, hd = attention.heads, attention.dim_head
    q = attention.to_q(x).reshape(b, hn, hd, 1, h, w)
    k = attention.to_k(context).reshape(b, hn, hd, d, h, w)
    v = attention.to_v(context).reshape(b, hn, hd, d, h, w)
    attn = ((q * k).sum(2) * attention.scale).softmax(dim=2)
    out = (v * attn.unsqueeze(2)).sum(3)
    return attention.to_out(out.reshape(b, hn * hd, h, w))


def inputs(batch: int, device: str, dtype: torch.dtype) -> tuple[DepthAttention, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    attention = DepthAttention(128, 64, 4, 32).to(device, dtype).requires_grad_(False)
    x = torch.randn(batch, 128, 32, 32, device=device, dtype=dtype)
    context = torch.randn(batch, 64, 48, 32, 32, device=device, dtype=dtype).relu()
    return attention, x, context


def peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(variant: str, batch: int, device: str, dtype: str) -> None:
    """Run one variant and print seconds, extra peak bytes and a checksum as JSON."""
    attention, x, context = inputs(batch, device, getattr(torch, dtype))
    run = (lambda: attention(x, context)) if variant == "folded" else (lambda: official(attention, x, context))
    with torch.no_grad():
        if device.startswith("cuda"):  # warm-up (kernels), then count from the inputs alone
            run()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = peak_bytes(device)  # on the CPU: the peak RSS so far, i.e. the inputs (no warm-up run)
        start = time.perf_counter()
        out = run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    torch.save(out.float().cpu(), f"/tmp/depth_attention_{variant}.pt")
    print(json.dumps({"seconds": seconds, "extra_peak": peak_bytes(device) - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--child", choices=["folded", "official"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.device, args.dtype)
        return
    results = {}
    for variant in ("official", "folded"):
        done = subprocess.run([sys.executable, __file__, "--child", variant, "--batch", str(args.batch),
                               "--device", args.device, "--dtype", args.dtype], capture_output=True, text=True,
                              check=True)
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    a, b = (torch.load(f"/tmp/depth_attention_{v}.pt") for v in ("official", "folded"))
    error = ((a - b).abs().max() / a.abs().max()).item()
    print(f"depth attention, batch {args.batch}, {args.dtype} on {args.device}: relative difference {error:.1e}")
    print(f"{'variant':10s} {'seconds':>8s} {'extra peak GiB':>15s}")
    for variant, r in results.items():
        print(f"{variant:10s} {r['seconds']:8.2f} {r['extra_peak'] / 2**30:15.2f}")
    o, f = results["official"], results["folded"]
    print(f"folded / official: time {f['seconds'] / o['seconds']:.2f}x, "
          f"extra memory {f['extra_peak'] / max(o['extra_peak'], 1):.2f}x")


if __name__ == "__main__":
    main()
