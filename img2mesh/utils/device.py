"""Choosing the torch device from ``--device auto|cpu|cuda[:N]``, and retrying work smaller on out-of-memory."""

from __future__ import annotations

from typing import Callable, TypeVar

from img2mesh.errors import UsageError

T = TypeVar("T")


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


def halving_on_out_of_memory(work: Callable[[int], T], size: int, minimum: int,
                             on_retry: Callable[[int], None]) -> tuple[T, int]:
    """``work(size)``, and on a CUDA out-of-memory error again with half the size (never below
    ``minimum``; ``on_retry(new_size)`` says so) until it fits. Returns the result and the size that
    worked, which the caller keeps for the rest of its loop. Any other error, or running out of memory
    at ``minimum``, propagates."""
    while True:
        try:
            return work(size), size
        except RuntimeError as exc:
            if not is_out_of_memory(exc) or size <= minimum:
                raise
        # Outside the except block, so the error's traceback no longer holds the failed attempt's tensors.
        size = max(minimum, size // 2)
        free_cached_memory()
        on_retry(size)
