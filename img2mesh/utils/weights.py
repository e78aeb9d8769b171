"""Weight files: the kinds of source they come from (the Hugging Face Hub, one file or several of a
repository), the offline checks, and the ``WeightFile`` protocol.

Each stage package declares its own entries (``<stage>/weights.py``, given to the framework as
``Stage.weights``); the application assembles them into the registry that ``img2mesh weights
list|download|path`` and ``doctor`` show, so the offline error a stage raises names the same file and
command that ``weights download`` fetches. Hugging Face downloads honour ``HF_HOME`` and
``HF_HUB_OFFLINE`` through ``huggingface_hub`` itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence

from img2mesh.errors import UsageError, WeightsError
from img2mesh.utils.network import offline_requested, unreachable

REPO_TYPES = ("model", "space", "dataset")


@dataclass(frozen=True)
class HubFile:
    """One file in a Hugging Face Hub repository."""

    repo_type: str
    repo_id: str
    filename: str

    @classmethod
    def parse(cls, text: str) -> "HubFile":
        """Parse ``repo_type:owner/name/path/in/repo`` (the ``generate.hub_sources`` form)."""
        repo_type, sep, rest = text.partition(":")
        parts = rest.split("/")
        if not sep or repo_type not in REPO_TYPES or len(parts) < 3 or not all(parts):
            raise UsageError(
                f"hub source {text!r}: expected REPO_TYPE:OWNER/NAME/FILE with REPO_TYPE one of "
                f"{', '.join(REPO_TYPES)}"
            )
        return cls(repo_type, "/".join(parts[:2]), "/".join(parts[2:]))

    def __str__(self) -> str:
        return f"Hugging Face {self.repo_type} {self.repo_id}, file {self.filename}"


def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub uses (``HF_HUB_CACHE``, else ``HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when ``--offline`` or ``HF_HUB_OFFLINE`` forbids network access."""
    from huggingface_hub import constants

    return offline_requested() or bool(constants.HF_HUB_OFFLINE)


OFFLINE_REASON = "offline: --offline or HF_HUB_OFFLINE is set"


def no_download_reason(urls: Sequence[str]) -> Optional[str]:
    """Why a download cannot even be tried (offline, or none of ``urls``' hosts answers), else None."""
    return OFFLINE_REASON if hub_offline() else unreachable(urls)


class WeightFile(Protocol):
    name: str
    description: str
    used_by: str
    size: str

    def locate(self) -> Optional[Path]:
        """The local path when the file is already present, else None (never downloads)."""

    def download(self) -> Path:
        """Fetch the file (or find it in the cache) and return its local path."""

    def source(self) -> str:
        """Where the file comes from, in words."""


@dataclass(frozen=True)
class HubWeight:
    """A weight file on the Hub, tried source by source in order."""

    name: str
    description: str
    used_by: str
    size: str
    sources: Sequence[HubFile]
    path_option: str

    def locate(self) -> Optional[Path]:
        from huggingface_hub import try_to_load_from_cache

        for src in self.sources:
            hit = try_to_load_from_cache(src.repo_id, src.filename, repo_type=src.repo_type)
            if isinstance(hit, str):
                return Path(hit)
        return None

    def download(self) -> Path:
        from huggingface_hub import constants, hf_hub_download

        if not self.sources:
            raise WeightsError(f"{self.description}: no Hugging Face source is configured "
                               f"(generate.hub_sources is empty); pass {self.path_option} PATH")
        found = self.locate()
        if found is not None:
            return found
        why = no_download_reason([constants.ENDPOINT])
        if why is None:
            failures = []
            for src in self.sources:
                try:
                    return Path(hf_hub_download(src.repo_id, src.filename, repo_type=src.repo_type))
                except Exception as exc:  # network, auth, missing repo: try the next source
                    failures.append(f"{src.repo_id}: {type(exc).__name__}")
            why = "; ".join(failures)
        raise WeightsError(
            f"{self.description} ({self.sources[0].filename.rsplit('/', 1)[-1]}, {self.size}): not in "
            f"the Hugging Face cache {hf_cache_dir()} and could not be downloaded ({why}); run "
            f"`img2mesh weights download {self.name}` where there is internet (then copy HF_HOME here), "
            f"or pass {self.path_option} PATH"
        )

    def source(self) -> str:
        return " | ".join(str(s) for s in self.sources)


@dataclass(frozen=True)
class HubRepoWeight:
    """Several files of one Hugging Face model repository (a diffusers pipeline's components)."""

    name: str
    description: str
    used_by: str
    size: str
    repo_id: str
    patterns: Sequence[str]
    path_option: str

    def locate(self) -> Optional[Path]:
        """The local snapshot when every file is cached (never downloads)."""
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(self.repo_id, allow_patterns=list(self.patterns), local_files_only=True))
        except Exception:  # not cached (huggingface_hub raises several kinds)
            return None
        fixed = [p for p in self.patterns if "*" not in p]
        return folder if all((folder / p).is_file() for p in fixed) else None

    def download(self) -> Path:
        from huggingface_hub import constants, snapshot_download

        found = self.locate()
        if found is not None:
            return found
        why = no_download_reason([constants.ENDPOINT])
        if why is None:
            try:
                return Path(snapshot_download(self.repo_id, allow_patterns=list(self.patterns)))
            except Exception as exc:  # network, auth, a missing file
                why = type(exc).__name__
        raise WeightsError(
            f"{self.description} ({self.repo_id}: {', '.join(self.patterns)}; {self.size}): not in the "
            f"Hugging Face cache {hf_cache_dir()} and could not be downloaded ({why}); run "
            f"`img2mesh weights download {self.name}` where there is internet (then copy HF_HOME here), "
            f"or {self.path_option}"
        )

    def source(self) -> str:
        return f"Hugging Face model {self.repo_id} ({len(self.patterns)} files and folders, safetensors only)"


def find_weight(entries: Sequence[WeightFile], name: str) -> WeightFile:
    """The entry called ``name``, or a UsageError listing the names."""
    for entry in entries:
        if entry.name == name:
            return entry
    raise UsageError(f"unknown weights {name!r}; choose one of {', '.join(e.name for e in entries)}")


def environment_summary() -> dict[str, str]:
    """Cache locations and offline switches, for ``img2mesh doctor``."""
    return {
        "HF_HOME": os.environ.get("HF_HOME", "(unset)"),
        "hub cache": str(hf_cache_dir()),
        "HF_HUB_OFFLINE": "on" if hub_offline() else "off",
    }
