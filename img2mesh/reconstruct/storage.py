"""A trained field on disk: ``field.safetensors`` (weights) + ``field.json`` (its widths and backend).

The reconstruct stage writes one per reconstructed sample set (in ``sample_K/`` sub-folders with
``--select all``); the mesh stage and the evaluation read them back. A hash-grid field is rebuilt
with the encoding it was trained with: tinycudann's and the pure-PyTorch one are different functions
of their weights, so reading one's weights into the other would give another surface without a
word. A field trained with tinycudann therefore loads only where tinycudann runs, and says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from img2mesh.errors import StageError
from img2mesh.utils.files import atomic_write_json

if TYPE_CHECKING:
    from img2mesh.reconstruct.fields import NeuSField

FIELD_FORMAT = 2  # 2: the hash-grid backend is the one the field was trained with


def save_field(field: "NeuSField", folder: Path) -> None:
    """Write the field's weights, configuration and hash-grid backend into ``folder``."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in field.state_dict().items()},
              str(folder / "field.safetensors"))
    atomic_write_json(folder / "field.json", {"format": FIELD_FORMAT, "config": field.config.to_dict(),
                                              "backend": field.backend})


def saved_backend(record: dict, backends: tuple[str, ...]) -> str:
    """The encoding backend a saved field needs, of its kind's ``backends`` (older fields did not record
    one: the last, the portable PyTorch one)."""
    backend = record.get("backend", backends[-1])
    return backend if backend in backends else backends[-1]


def load_field(folder: Path, device: str) -> "NeuSField":
    """Rebuild the trained field the stage saved in ``folder``, with the backend it was trained with."""
    from safetensors.torch import load_file

    from img2mesh.neus.kinds import field_kind
    from img2mesh.reconstruct.fields import FieldConfig, NeuSField

    record = json.loads((folder / "field.json").read_text())
    config = FieldConfig.from_record(record["config"])
    backends = field_kind(config.kind).backends
    backend = saved_backend(record, backends) if backends else None
    try:
        field = NeuSField(config, backend=backend)
    except Exception as exc:  # tinycudann missing, or no CUDA device here
        raise StageError(
            f"{folder / 'field.json'}: this hash-grid field was trained with tinycudann, which cannot run here "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else 'unavailable'}); its weights mean "
            f"something else to the pure-PyTorch encoding, so mesh it on a machine with tinycudann and CUDA, or "
            f"re-run reconstruct here (img2mesh doctor says which encoding this machine has)") from None
    field.load_state_dict(load_file(folder / "field.safetensors"))
    return field.to(device).eval().requires_grad_(False)
