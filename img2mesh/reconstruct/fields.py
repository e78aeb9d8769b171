"""Signed-distance + colour fields for NeuS: a vanilla MLP field and a multi-resolution hash-grid field.

Both share one interface: ``sdf_features(x) -> (sdf, features)``, ``color(x, normal, view_dir,
features, codes)``, and the learned inverse variance ``inv_s``. The kinds and their encodings are
``img2mesh/neus/`` (``kinds.FIELD_KINDS``; the hash grid: tinycudann on CUDA, else pure PyTorch, two
functions of their weights that ``storage.py`` never mixes).

With ``appearance_dim`` > 0 each training view has a learned code (NeRF-W's appearance embedding)
fed to the colour network, so a view recoloured on its own is explained by its code rather than
painted into the texture; a colour asked for without a code (meshing, texturing) uses the mean code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from img2mesh.neus.kinds import FieldName, build_encoding, field_kind
from img2mesh.utils.settings import fixed

if TYPE_CHECKING:
    from img2mesh.reconstruct.config import ReconstructConfig



@dataclass(frozen=True)
class FieldConfig:
    """Widths of a field; saved next to its weights so the mesh stage can rebuild it.

    The fields without a value come from ``reconstruct.*`` (:meth:`from_config`); the others are
    the fixed architecture.
    """

    kind: FieldName
    hidden: int
    layers: int
    skip_at: int
    hash_levels: int
    hash_log2_size: int
    bound: float  # the hash grid spans [-bound, bound]^3 (scene.bound)
    feature_dim: int
    color_hidden: int
    color_layers: int
    # "direction": the ray's direction; "reflected": the direction mirrored about the normal, as the
    # official NeuS of SyncDreamer feeds it
    view_input: Literal["direction", "reflected"]
    appearance_dim: int  # per-view appearance code width (0: none)
    appearance_views: int  # how many codes (the training views)
    frequencies: int = fixed(6, "NeuS's positional encoding of x")
    view_frequencies: int = fixed(4, "NeuS's positional encoding of the view direction")
    init_radius: float = fixed(0.4, "the sphere the SDF network starts as")
    init_variance: float = fixed(0.3, "NeuS's initial variance")
    hash_features: int = fixed(2, "features per hash-grid level")
    hash_base_resolution: int = fixed(16, "coarsest hash-grid level")
    hash_max_resolution: int = fixed(2048, "finest hash-grid level")

    @classmethod
    def from_config(cls, cfg: "ReconstructConfig", bound: float, views: int) -> "FieldConfig":
        """The run's field for ``views`` training views: its kind and widths, the skip connection
        half-way, the scene's extent."""
        return cls(kind=cfg.field, hidden=cfg.hidden, layers=cfg.layers, skip_at=cfg.layers // 2,
                   hash_levels=cfg.hash_levels, hash_log2_size=cfg.hash_log2_size, bound=bound,
                   feature_dim=cfg.feature_dim, color_hidden=cfg.color_hidden, color_layers=cfg.color_layers,
                   view_input=cfg.view_input, appearance_dim=cfg.appearance_dim,
                   appearance_views=views if cfg.appearance_dim else 0)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "FieldConfig":
        """A saved ``field.json`` config; keys of fields saved before a key existed take the value that
        reproduces them (no appearance codes; the ray direction as view input)."""
        legacy = {"view_input": "direction", "appearance_dim": 0, "appearance_views": 0, "feature_dim": 64,
                  "color_hidden": 64, "color_layers": 2}
        return cls(**{**legacy, **record})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def positional_encoding(x: torch.Tensor, frequencies: int) -> torch.Tensor:
    """[x, sin(2^k x), cos(2^k x)] for k < frequencies."""
    if frequencies == 0:
        return x
    scales = 2.0 ** torch.arange(frequencies, device=x.device, dtype=x.dtype)
    angles = (x[..., None, :] * scales[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], -1)


class SDFNetwork(nn.Module):
    """SDF MLP with softplus, weight norm, a skip connection and NeuS's geometric initialisation.

    Initialised so that sdf(x) ≈ |x| − init_radius: a sphere, from which training starts.
    """

    def __init__(self, config: FieldConfig, encoding_dim: int) -> None:
        super().__init__()
        self.config = config
        dims = [encoding_dim] + [config.hidden] * config.layers + [1 + config.feature_dim]
        self.linears = nn.ModuleList()
        for i in range(len(dims) - 1):
            out_dim = dims[i + 1] - (dims[0] if i + 1 == config.skip_at else 0)
            layer = nn.Linear(dims[i], out_dim)
            self._geometric_init(layer, i, len(dims) - 2, encoding_dim)
            self.linears.append(nn.utils.parametrizations.weight_norm(layer))
        self.activation = nn.Softplus(beta=100)

    def _geometric_init(self, layer: nn.Linear, index: int, last: int, encoding_dim: int) -> None:
        out_dim, in_dim = layer.weight.shape
        with torch.no_grad():
            if index == last:
                nn.init.normal_(layer.weight, mean=math.sqrt(math.pi) / math.sqrt(in_dim), std=1e-4)
                nn.init.constant_(layer.bias, -self.config.init_radius)
                return
            nn.init.constant_(layer.bias, 0.0)
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2) / math.sqrt(out_dim))
            # Only raw xyz drives the initial sphere: encoded inputs start with zero weight.
            if index == 0:
                layer.weight[:, 3:] = 0.0
            elif index == self.config.skip_at:
                layer.weight[:, -(encoding_dim - 3):] = 0.0

    def forward(self, encoded: torch.Tensor) -> torch.Tensor:
        h = encoded
        for i, layer in enumerate(self.linears):
            if i == self.config.skip_at:
                h = torch.cat([h, encoded], -1) / math.sqrt(2)
            h = layer(h)
            if i < len(self.linears) - 1:
                h = self.activation(h)
        return h


class ColorNetwork(nn.Module):
    """Radiance from position, normal, encoded view direction and the SDF network's features.

    With ``view_input="reflected"`` the direction is mirrored about the (unit) normal first, so a
    highlight is a function of one input rather than of the view and the normal together.
    """

    def __init__(self, config: FieldConfig) -> None:
        super().__init__()
        view_dim = 3 + 6 * config.view_frequencies
        dims = [3 + 3 + view_dim + config.feature_dim + config.appearance_dim] + \
            [config.color_hidden] * config.color_layers + [3]
        self.view_frequencies = config.view_frequencies
        self.reflect = config.view_input == "reflected"
        self.layers = nn.ModuleList(nn.utils.parametrizations.weight_norm(nn.Linear(a, b))
                                    for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor, normal: torch.Tensor, view: torch.Tensor, features: torch.Tensor,
                codes: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.reflect:
            view = view - 2 * (view * normal).sum(-1, keepdim=True) * normal
        inputs = [x, normal, positional_encoding(view, self.view_frequencies), features]
        h = torch.cat(inputs if codes is None else inputs + [codes], -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return torch.sigmoid(h)


class NeuSField(nn.Module):
    """SDF + colour + inverse variance; ``kind`` picks positional encoding (mlp) or hash grid.

    ``backend`` picks the hash encoding (``make_hash_encoding``): None for the fastest here,
    ``"pytorch"`` or ``"tinycudann"`` for that one (a saved field is rebuilt with its own).
    """

    def __init__(self, config: FieldConfig, backend: Optional[str] = None) -> None:
        super().__init__()
        self.config = config
        if field_kind(config.kind).encoding is not None:
            self.encoding, self.backend = build_encoding(config, backend)
            encoding_dim = 3 + self.encoding.output_dim
        else:
            self.encoding, self.backend = None, "positional encoding"
            encoding_dim = 3 + 6 * config.frequencies
        self.sdf_net = SDFNetwork(config, encoding_dim)
        self.color_net = ColorNetwork(config)
        self.variance = nn.Parameter(torch.tensor(config.init_variance))
        if config.appearance_dim:  # zeros: every view starts at the mean look (and no random draw is added)
            self.appearance = nn.Parameter(torch.zeros(config.appearance_views, config.appearance_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoding is None:
            return positional_encoding(x, self.config.frequencies)
        return torch.cat([x, self.encoding(x)], -1)

    def sdf_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.sdf_net(self.encode(x))
        return out[..., 0], out[..., 1:]

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        return self.sdf_features(x)[0]

    def sdf_and_gradient(self, x: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SDF, features and ∇SDF (with a graph for the eikonal loss when training)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True) if not x.requires_grad else x
            sdf, features = self.sdf_features(x)
            grad = torch.autograd.grad(sdf.sum(), x, create_graph=create_graph)[0]
        return sdf, features, grad

    def color(self, x: torch.Tensor, normal: torch.Tensor, view: torch.Tensor, features: torch.Tensor,
              view_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Colour at ``x``; with appearance codes, each point's view's (``view_ids``, one per point) or,
        without ids, the mean code (what the exported texture shows)."""
        if not self.config.appearance_dim:
            return self.color_net(x, normal, view, features)
        if view_ids is None:
            codes = self.appearance.mean(0).expand(x.shape[0], -1)
        else:  # a one-hot product, not self.appearance[view_ids]: that gather's backward accumulates in
            # a thread-dependent order on the CPU, so the same seed would not give the same field
            codes = torch.nn.functional.one_hot(view_ids, self.appearance.shape[0]).to(self.appearance.dtype) @ self.appearance
        return self.color_net(x, normal, view, features, codes)

    def inv_s(self) -> torch.Tensor:
        return torch.exp(self.variance * 10.0).clamp(1e-6, 1e6)
