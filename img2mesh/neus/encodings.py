"""Position encodings of NeuS fields besides NeuS's own positional encoding: the multi-resolution hash
grid (Müller et al. 2022), from tinycudann when it runs (CUDA only) or in pure PyTorch.

The two are the same structure and hash but not the same function of their weights (tinycudann offsets
and scales the grid its own way), so a field records which one trained it (``kinds.FieldKind.backends``)
and is rebuilt with that one. The field's sizes come from its ``FieldConfig`` (``hash_levels``,
``hash_features``, ``hash_log2_size``, ``hash_base_resolution``, ``hash_max_resolution``, ``bound``).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn as nn

from img2mesh.neus.kinds import FIELD_KINDS

PRIMES = (1, 2654435761, 805459861)
HASH_BACKENDS = FIELD_KINDS["hashgrid"].backends  # tinycudann first: the fast one where it runs


class HashGridEncoding(nn.Module):
    """Multi-resolution hash encoding (Müller et al. 2022) in plain PyTorch, trilinear per level."""

    def __init__(self, levels: int, features: int, log2_size: int, base: int, finest: int, bound: float) -> None:
        super().__init__()
        self.levels, self.features, self.size, self.bound = levels, features, 2**log2_size, bound
        growth = math.exp((math.log(finest) - math.log(base)) / max(levels - 1, 1))
        self.resolutions = [int(math.floor(base * growth**level)) for level in range(levels)]
        self.table = nn.Parameter(torch.empty(levels, self.size, features).uniform_(-1e-4, 1e-4))

    @property
    def output_dim(self) -> int:
        return self.levels * self.features

    def _index(self, corner: torch.Tensor, resolution: int) -> torch.Tensor:
        if (resolution + 1) ** 3 <= self.size:  # a dense grid fits: no collisions
            return corner[..., 0] + (resolution + 1) * (corner[..., 1] + (resolution + 1) * corner[..., 2])
        hashed = corner[..., 0] * PRIMES[0] ^ corner[..., 1] * PRIMES[1] ^ corner[..., 2] * PRIMES[2]
        return hashed % self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = ((x / self.bound + 1) / 2).clamp(0, 1)  # [-bound, bound] -> [0, 1]
        outputs = []
        offsets = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], device=x.device)
        for level, resolution in enumerate(self.resolutions):
            scaled = unit * resolution
            base = scaled.floor().long().clamp(max=resolution - 1)
            frac = scaled - base
            corners = base[..., None, :] + offsets  # ...,8,3
            weights = torch.where(offsets.bool(), frac[..., None, :], 1 - frac[..., None, :]).prod(-1)
            values = self.table[level][self._index(corners, resolution)]  # ...,8,F
            outputs.append((weights[..., None] * values).sum(-2))
        return torch.cat(outputs, -1)


def tinycudann_encoding(config: Any) -> nn.Module:
    """tinycudann's HashGrid for ``config``; raises (ImportError, RuntimeError, ...) where it cannot run."""
    import tinycudann as tcnn

    if not torch.cuda.is_available():
        raise RuntimeError("tinycudann needs a CUDA device")
    growth = math.exp((math.log(config.hash_max_resolution) - math.log(config.hash_base_resolution))
                      / max(config.hash_levels - 1, 1))
    encoding = tcnn.Encoding(3, {"otype": "HashGrid", "n_levels": config.hash_levels,
                                 "n_features_per_level": config.hash_features,
                                 "log2_hashmap_size": config.hash_log2_size,
                                 "base_resolution": config.hash_base_resolution,
                                 "per_level_scale": growth})
    return _TcnnWrapper(encoding, config.bound)


def make_hash_encoding(config: Any, backend: Optional[str] = None) -> tuple[nn.Module, str]:
    """The hash encoding and its backend's name. ``backend`` None: tinycudann where it imports and CUDA is
    present, else the PyTorch one; ``"tinycudann"`` or ``"pytorch"``: that one (tinycudann raising where
    it cannot run)."""
    if backend not in (None, *HASH_BACKENDS):
        raise ValueError(f"unknown hash-grid backend {backend!r}")
    if backend == "tinycudann":
        return tinycudann_encoding(config), "tinycudann"
    if backend is None and torch.cuda.is_available():
        try:
            return tinycudann_encoding(config), "tinycudann"
        except Exception:  # missing, or built for another GPU: the PyTorch encoding (another function)
            pass
    return HashGridEncoding(config.hash_levels, config.hash_features, config.hash_log2_size,
                            config.hash_base_resolution, config.hash_max_resolution, config.bound), "pytorch"


class _TcnnWrapper(nn.Module):
    def __init__(self, encoding: nn.Module, bound: float) -> None:
        super().__init__()
        self.encoding, self.bound = encoding, bound
        self.output_dim = encoding.n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = ((x / self.bound + 1) / 2).clamp(0, 1)
        return self.encoding(unit.reshape(-1, 3)).float().reshape(*x.shape[:-1], -1)


