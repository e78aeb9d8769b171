"""The weight files img2mesh uses, where they come from and where they are cached.

``img2mesh weights list|download|path`` and the stages share this registry, so the offline error a
stage raises names the same file and command that ``weights download`` fetches. Hugging Face
downloads honour ``HF_HOME`` and ``HF_HUB_OFFLINE`` through ``huggingface_hub`` itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol, Sequence

from img2mesh.errors import UsageError, WeightsError
from img2mesh.utils.network import offline_requested, unreachable

if TYPE_CHECKING:
    import torch

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
CARVEKIT_HOSTS = ("https://cdn.carve.photos", "https://huggingface.co")  # carvekit's CDN, then its Hub mirror
LOFTR_HOSTS = ("https://huggingface.co", "https://cmp.felk.cvut.cz")  # kornia's two URLs per variant


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
            f"{self.description} ({self.sources[0].filename.rsplit('/', 1)[-1]}, {self.size}) is not in "
            f"the Hugging Face cache {hf_cache_dir()} and could not be downloaded ({why}); run "
            f"`img2mesh weights download {self.name}` where there is internet (then copy HF_HOME here), "
            f"or pass {self.path_option} PATH"
        )

    def source(self) -> str:
        return " | ".join(str(s) for s in self.sources)


@dataclass(frozen=True)
class CarvekitWeight:
    """A carvekit checkpoint, fetched and cached by carvekit's own downloader."""

    name: str
    description: str
    used_by: str
    size: str
    filename: str

    def _checkpoints_dir(self) -> Path:
        try:
            from carvekit.ml.files import checkpoints_dir
        except ImportError:
            raise WeightsError("carvekit is not installed; `pip install carvekit` first") from None
        return Path(checkpoints_dir)

    def locate(self) -> Optional[Path]:
        try:
            root = self._checkpoints_dir()
        except WeightsError:
            return None
        hits = sorted(root.rglob(self.filename)) if root.is_dir() else []
        return hits[0] if hits else None

    def download(self) -> Path:
        root = self._checkpoints_dir()
        found = self.locate()
        if found is not None:
            return found
        failure = no_download_reason(CARVEKIT_HOSTS)
        if failure is None:
            import warnings

            from carvekit.utils.download_models import downloader

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # carvekit warns once per mirror it tries
                    return Path(downloader(self.filename))
            except Exception as exc:  # carvekit raises plain ConnectionError and friends
                failure = type(exc).__name__
        raise WeightsError(
            f"{self.description} ({self.filename}, {self.size}) is not in carvekit's cache {root} "
            f"and could not be downloaded ({failure}); run `img2mesh weights download {self.name}` "
            f"where there is internet and copy {root} here, or pass an RGBA image or --no-segment"
        )

    def source(self) -> str:
        return f"carvekit's downloader (file {self.filename})"


SD2_DEPTH_REPO = "stabilityai/stable-diffusion-2-depth"  # the enhance stage's model (enhance.hub_repo)
# What the enhance stage loads from it: every component as safetensors (no pickles), configs, the tokenizer.
SD2_DEPTH_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                   "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                   "text_encoder/model.safetensors", "tokenizer/*", "depth_estimator/config.json",
                   "depth_estimator/model.safetensors", "feature_extractor/preprocessor_config.json",
                   "scheduler/scheduler_config.json")


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
            f"{self.description} ({self.repo_id}: {', '.join(self.patterns)}; {self.size}) is not in the "
            f"Hugging Face cache {hf_cache_dir()} and could not be downloaded ({why}); run "
            f"`img2mesh weights download {self.name}` where there is internet (then copy HF_HOME here), "
            f"or {self.path_option}"
        )

    def source(self) -> str:
        return f"Hugging Face model {self.repo_id} ({len(self.patterns)} files and folders, safetensors only)"


def sd2_depth_weight(repo_id: str = SD2_DEPTH_REPO) -> HubRepoWeight:
    """Stable Diffusion 2 depth (UNet, VAE, OpenCLIP text encoder, tokenizer, DPT depth, scheduler)."""
    return HubRepoWeight("sd2_depth", "Stable Diffusion 2 depth (CreativeML Open RAIL++-M)",
                         "enhance (enhance.enabled, the quality preset)", "about 5.5 GB", repo_id,
                         SD2_DEPTH_FILES, "set enhance.hub_repo to a local copy of the repository")


LOFTR_FILES = {"indoor_new": "loftr_indoor_ds_new.ckpt", "outdoor": "loftr_outdoor.ckpt"}


@dataclass(frozen=True)
class LoftrWeight:
    """kornia's LoFTR weights (``indoor_new``, One-2-3-45's, or ``outdoor``), cached by kornia (torch.hub)."""

    name: str = "loftr"
    variant: str = "indoor_new"
    used_by: str = "elevation (matcher: loftr)"
    size: str = "about 45 MB"

    @property
    def description(self) -> str:
        return f"kornia LoFTR {self.variant} matcher weights"

    @property
    def filename(self) -> str:
        return LOFTR_FILES[self.variant]

    def locate(self) -> Optional[Path]:
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / self.filename
        return path if path.is_file() else None

    def load(self, device: str) -> "torch.nn.Module":
        """The matcher with its weights (downloaded by kornia when missing)."""
        try:
            from kornia.feature import LoFTR
        except ImportError:
            raise WeightsError("the loftr matcher needs kornia (`pip install kornia`); "
                               "or use --set elevation.matcher=sift") from None
        why = None if self.locate() is not None else no_download_reason(LOFTR_HOSTS)
        if why is None:
            try:
                return LoFTR(pretrained=self.variant).to(device).eval().requires_grad_(False)
            except Exception as exc:  # network errors surface as many types through torch.hub
                why = type(exc).__name__
        import torch

        raise WeightsError(
            f"{self.description} ({self.filename}, {self.size}) are not in torch.hub's cache "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'} and could not be downloaded "
            f"({why}); run `img2mesh weights download {self.name}` where there is internet "
            f"and copy that folder here, or use --set elevation.matcher=sift")

    def download(self) -> Path:
        self.load("cpu")
        return self.locate() or Path(self.filename)

    def source(self) -> str:
        return f"kornia's loader (file {self.filename})"


def registry(hub_sources: Sequence[str] = ()) -> list[WeightFile]:
    """Every weight file img2mesh can use; ``hub_sources`` (``generate.hub_sources``) are SyncDreamer's."""
    return [
        HubWeight(
            name="syncdreamer",
            description="The SyncDreamer checkpoint",
            used_by="generate, elevation",
            size="about 5.6 GB",
            sources=tuple(HubFile.parse(s) for s in hub_sources),
            path_option="--checkpoint",
        ),
        CarvekitWeight("tracer_b7", "carvekit Tracer-B7 segmentation weights", "segment, reconstruct masks",
                       "about 270 MB", "tracer_b7.pth"),
        CarvekitWeight("fba", "carvekit FBA matting weights", "segment, reconstruct masks", "about 140 MB",
                       "fba_matting.pth"),
        LoftrWeight(),
        LoftrWeight("loftr_outdoor", "outdoor", "elevation (elevation.loftr_weights: outdoor)"),
        sd2_depth_weight(),
    ]


def get_weight(name: str, hub_sources: Sequence[str] = ()) -> WeightFile:
    """Look a weight file up by name, or raise a UsageError listing the names."""
    entries = registry(hub_sources)
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
