"""The kinds of NeuS field, in one place (no torch here: the configuration reads the names).

Each kind says how the SDF network encodes positions and what follows from that: whether a saved field
records which implementation of its encoding made it (weights of one mean something else to another,
``reconstruct/storage.py``), and whether training adds the curvature regulariser (hash-grid SDFs are
noisy). Code asks the kind, never compares names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class FieldKind:
    """One kind of field."""

    name: str
    description: str
    # "module:function" building the encoding, called as f(field_config, backend) -> (module, backend name);
    # None: NeuS's own positional encoding of x
    encoding: Optional[str]
    backends: tuple[str, ...]  # the encoding's interchangeable implementations (a saved field records which)
    curvature: bool  # the curvature regulariser applies


FIELD_KINDS = {
    "mlp": FieldKind("mlp", "vanilla NeuS (positional encoding)", None, (), False),
    "hashgrid": FieldKind("hashgrid", "a multi-resolution hash encoding (tinycudann on CUDA, else PyTorch)",
                          "img2mesh.neus.encodings:make_hash_encoding", ("tinycudann", "pytorch"), True),
}
FieldName = Literal[tuple(FIELD_KINDS)]  # type: ignore[valid-type]  # the config's choices, from the registry


def field_kind(name: str) -> FieldKind:
    """The registry's entry for ``name`` (a config literal, so it exists)."""
    return FIELD_KINDS[name]


def build_encoding(config: object, backend: Optional[str] = None) -> tuple[object, str]:
    """The encoding of ``config.kind`` (a reconstruct ``FieldConfig``) and its backend's name."""
    from importlib import import_module

    module, function = field_kind(config.kind).encoding.split(":")  # type: ignore[attr-defined]
    return getattr(import_module(module), function)(config, backend)
