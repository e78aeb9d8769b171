"""Choosing the torch device from ``--device auto|cpu|cuda[:N]``."""

from __future__ import annotations

from img2mesh.errors import UsageError


def resolve_device(spec: str) -> str:
    """Turn a device request into a concrete torch device string, or explain why it cannot be."""
    import torch  # lazy: torch takes seconds to import

    if spec == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if spec == "auto":
        return "cuda:0" if available else "cpu"
    if not available:
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise UsageError(f"--device {spec}: {why}; use --device cpu or --device auto")
    index = int(spec.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise UsageError(f"--device {spec}: only {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1})")
    return f"cuda:{index}"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a (CUDA) out-of-memory error, which a smaller batch may avoid."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def free_cached_memory() -> None:
    """Return the CUDA caching allocator's free blocks (after an out-of-memory error)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
