"""What ``img2mesh doctor`` reports: Python, torch, GPUs, optional accelerators, weights."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shutil
import sys

Row = tuple[str, str]


def _import_status(module: str, dist: str) -> str:
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    try:
        importlib.import_module(module)
    except Exception as exc:  # a native extension that fails to load must not break doctor
        return f"{version}, fails to import ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
    return version


def _installed(dist: str, how: str) -> str:
    """The distribution's version without importing it (Ray takes seconds to import), or how to get it."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return f"not installed ({how})"


def _ffmpeg() -> str:
    """The ffmpeg imageio will use for turntable.mp4 (imageio-ffmpeg ships one), or why GIF is used."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or its binary cannot run here
        return shutil.which("ffmpeg") or "none found (turntables are written as GIF)"


def _memory_gib() -> str:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return f"{pages * size / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        return "unknown"


def system_rows() -> list[Row]:
    """Python, platform, CPU and memory."""
    from img2mesh import __version__

    return [
        ("img2mesh", __version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
        ("cpu cores", str(os.cpu_count())),
        ("memory", _memory_gib()),
    ]


def torch_rows() -> list[Row]:
    """torch build, CUDA, and every visible GPU with its memory."""
    try:
        import torch
    except Exception as exc:
        return [("torch", f"fails to import: {exc}")]
    rows = [("torch", torch.__version__), ("torch CUDA build", torch.version.cuda or "none (CPU-only build)")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append((f"cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB"))
    else:
        rows.append(("CUDA", "no GPU visible: img2mesh runs on the CPU (slowly)"))
    return rows


def accelerator_rows() -> list[Row]:
    """Optional libraries, and what the reconstruct stage will use because of them."""
    from img2mesh.mesh.remesh import quad_remesher_status

    tcnn = _import_status("tinycudann", "tinycudann")
    rows = [
        ("tinycudann", tcnn),
        ("nerfacc", _import_status("nerfacc", "nerfacc")),
        ("carvekit", _import_status("carvekit", "carvekit")),
        ("diffusers", _import_status("diffusers", "diffusers")),
        ("transformers", _import_status("transformers", "transformers")),
        ("ray (for --ray)", _installed("ray", "pip install 'img2mesh[ray]'")),
        ("pyinstantmeshes (for --remesh quad)", quad_remesher_status()),
        ("ffmpeg", _ffmpeg()),
    ]
    tcnn_runs = tcnn[:1].isdigit() and "fails" not in tcnn
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: reported in its own section
        cuda = False
    backend = ("tinycudann" if tcnn_runs and cuda else
               "pure PyTorch (a hash-grid field trained with tinycudann elsewhere cannot be meshed here: its "
               "weights are saved with their encoding and refused by another one)")
    rows.append(("hash-grid encoding", backend))
    try:
        from img2mesh.reconstruct.occupancy import sampler_summary

        rows.append(("NeuS sampling", "dense coarse-to-fine (reconstruct.sampler: auto)"))
        rows.append(("occupancy sampler", sampler_summary()))
    except Exception as exc:  # torch missing or broken: reported above
        rows.append(("occupancy sampler", f"unknown ({type(exc).__name__})"))
    return rows


def weight_rows() -> list[Row]:
    """Cache locations and each weight file: present (with its path) or missing."""
    from img2mesh.app import weight_registry
    from img2mesh.generate.loading import cache_dir
    from img2mesh.utils.weights import environment_summary

    rows = list(environment_summary().items())
    converted = sorted(cache_dir().glob("syncdreamer-*.safetensors")) if cache_dir().is_dir() else []
    rows.append(("img2mesh cache", f"{cache_dir()} ({len(converted)} converted checkpoint(s))"))
    for entry in weight_registry():
        path = entry.locate()
        rows.append((f"weights: {entry.name}", str(path) if path else f"missing ({entry.size})"))
    return rows


def report() -> dict[str, list[Row]]:
    """Every section of the doctor report."""
    return {
        "System": system_rows(),
        "PyTorch": torch_rows(),
        "Optional accelerators and libraries": accelerator_rows(),
        "Weights": weight_rows(),
    }
