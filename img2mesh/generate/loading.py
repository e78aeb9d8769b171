"""Loading SyncDreamer weights: find the checkpoint, read it safely, convert once, cache as safetensors.

Sources, in order: ``generate.checkpoint`` (``--weights PATH``), else the Hugging Face Hub
(``generate.hub_sources``, through ``huggingface_hub`` with its cache and offline mode). The
official file is a Lightning checkpoint read with ``torch.load(weights_only=True)``; a file that
safe loading refuses is only unpickled with ``generate.trust_checkpoint`` (``--trust-checkpoint``).
The converted weights are cached under ``IMG2MESH_CACHE`` (default ``~/.cache/img2mesh``) keyed by
the source file's SHA-256, so later runs read a safetensors file and unpickle nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from img2mesh.errors import WeightsError
from img2mesh.generate.architecture import SyncDreamerConfig
from img2mesh.generate.convert import convert_official, full_manifest, load_converted
from img2mesh.generate.model import SyncDreamer
from img2mesh.utils.files import atomic_write_json, sha256_file, sha256_json

log = logging.getLogger("img2mesh")
CONVERTED_FORMAT = 1  # bump when the converted layout changes, so stale caches are not reused


def cache_dir() -> Path:
    """Where converted weights live (``IMG2MESH_CACHE``, else ``$XDG_CACHE_HOME/img2mesh``)."""
    if os.environ.get("IMG2MESH_CACHE"):
        return Path(os.environ["IMG2MESH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "img2mesh"


@dataclass(frozen=True)
class LoadedWeights:
    """Where the weights came from, for the run manifest."""

    source: str
    sha256: Optional[str]
    converted: Optional[str]

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "converted_cache": self.converted}


def file_digest(path: Path) -> str:
    """SHA-256 of a (multi-GB) file, remembered per (path, size, mtime) so it is hashed once."""
    index_path = cache_dir() / "digests.json"
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if key not in index:
        log.info("generate: hashing %s (%.1f GB), once", path.name, stat.st_size / 1e9)
        index[key] = sha256_file(path)
        try:
            atomic_write_json(index_path, index)
        except OSError:
            pass  # a read-only cache only costs a re-hash next time
    return index[key]


def _refused_by_safe_loading(exc: Exception) -> bool:
    text = str(exc)
    return "Unsupported global" in text or "not an allowed global" in text or "Unsupported operand" in text


def read_state_dict(path: Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a ``.ckpt``/``.pt`` (Lightning or plain) or ``.safetensors`` file.

    Raises WeightsError for a truncated or foreign file, and for a pickle that safe loading
    refuses unless ``trust`` is set.
    """
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap can only be used" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        if not _refused_by_safe_loading(exc):
            raise WeightsError(f"{path} is not a PyTorch checkpoint ({str(exc).splitlines()[0][:120]})") from None
        if not trust:
            raise WeightsError(
                f"{path} holds Python objects that safe loading (torch.load weights_only=True) refuses; "
                f"if you trust where it came from, pass --trust-checkpoint (it is then converted once "
                f"to safetensors and never unpickled again)") from None
        log.warning("generate: unpickling %s because --trust-checkpoint was given", path)
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for foreign bytes (RuntimeError, IndexError, ...)
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint (truncated or another kind of file: "
            f"{str(exc).splitlines()[0][:120]})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is a PyTorch file but holds no state_dict of tensors")
    return dict(state)


def resolve_checkpoint(checkpoint: Optional[str], hub_sources: list[str]) -> Path:
    """The local checkpoint file: the given path, or the Hub's cached/downloaded file."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(f"SyncDreamer checkpoint {path} does not exist")
        return path
    from img2mesh.generate.weights import syncdreamer_weight

    return syncdreamer_weight(hub_sources).download()


def load_syncdreamer(
    model: Union[str, SyncDreamerConfig] = "full",
    weights: str = "pretrained",
    checkpoint: Optional[str] = None,
    hub_sources: Optional[list[str]] = None,
    trust: bool = False,
    expected_keys: Optional[Mapping[str, list[int]]] = None,
) -> tuple[SyncDreamer, LoadedWeights]:
    """Build the model and load its weights (``weights="random"``: untrained, for tests).

    ``model`` is ``"full"``, ``"tiny"`` or any :class:`SyncDreamerConfig`. ``expected_keys`` is
    the official key manifest to check the checkpoint against; the released model's manifest is
    used for the full model.
    """
    config = SyncDreamerConfig.named(model) if isinstance(model, str) else model
    if weights == "random":
        torch.manual_seed(0)  # untrained, but the same weights every time
        return SyncDreamer(config).eval(), LoadedWeights("random", None, None)
    path = resolve_checkpoint(checkpoint, list(hub_sources or []))
    digest = file_digest(path)
    widths = sha256_json(dataclasses.asdict(config))[:8]
    cached = cache_dir() / f"syncdreamer-{widths}-{digest[:16]}-v{CONVERTED_FORMAT}.safetensors"
    network = SyncDreamer(config).eval()
    if cached.is_file():
        from safetensors.torch import load_file

        converted = load_file(cached)
    else:
        state = read_state_dict(path, trust)
        if expected_keys is None and config == SyncDreamerConfig.full():
            expected_keys = full_manifest()
        converted = convert_official(state, network, expected_keys, source=str(path))
        _save_cache(cached, converted)
    load_converted(network, converted, str(path))
    return network, LoadedWeights(str(path), digest, str(cached) if cached.is_file() else None)


def _save_cache(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write the converted weights through a temporary file (streamed: no second copy in memory)."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
    except OSError as exc:  # an unwritable cache must not stop generation
        tmp.unlink(missing_ok=True)
        log.warning("generate: could not cache converted weights at %s (%s)", path, exc)
