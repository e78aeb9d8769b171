"""The configuration keys that size a NeuS field and its sampling, declared once.

``reconstruct`` inherits :class:`FieldKeys` (the official NeuS widths); generate's 3D feedback inherits
the same keys with a fast model's defaults (:func:`field_keys_with`). Both sections list them flat
(``reconstruct.hidden``, ``generate.feedback.hidden``), with one help line and range each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from img2mesh.neus.kinds import FieldName
from img2mesh.pipeline.config import Section, setting


@dataclass
class FieldKeys(Section):
    """The field's kind, its networks' widths, its hash grid, its samples per ray and learning rate."""

    field: FieldName = setting("mlp", "the field's kind: mlp (vanilla NeuS) or hashgrid (a multi-resolution hash "
                                      "encoding)")
    hidden: int = setting(256, "SDF network width", minimum=1)
    layers: int = setting(8, "SDF network depth (skip connection half-way)", minimum=1)
    feature_dim: int = setting(256, "SDF network features fed to the colour network (official NeuS: 256)", minimum=1)
    color_hidden: int = setting(256, "colour network width (official: 256)", minimum=1)
    color_layers: int = setting(4, "colour network hidden layers (official: 4)", minimum=1)
    hash_levels: int = setting(16, "hash-grid field: resolution levels (16 to 2048 cells)", minimum=1)
    hash_log2_size: int = setting(19, "hash-grid field: log2 of each level's table size", minimum=1)
    samples_per_ray: int = setting(128, "dense sampler: half uniform, half importance (NeuS up-sampling)", minimum=2)
    learning_rate: float = setting(0.0005, "learning rate of the networks (the hash tables: 0.01)", minimum=0.0)


FIELD_KEYS = tuple(f.name for f in dataclasses.fields(FieldKeys))


def field_keys_with(name: str, **defaults: Any) -> type:
    """:class:`FieldKeys` with other defaults (same keys, help and ranges), as a base for another section."""
    unknown = set(defaults) - set(FIELD_KEYS)
    if unknown:
        raise TypeError(f"not field keys: {sorted(unknown)}")
    fields = []
    for f in dataclasses.fields(FieldKeys):
        meta = f.metadata
        fields.append((f.name, f.type, setting(defaults.get(f.name, f.default), meta["help"], minimum=meta["minimum"],
                                               maximum=meta["maximum"])))
    return dataclasses.make_dataclass(name, fields, bases=(Section,), namespace={"__module__": __name__})
