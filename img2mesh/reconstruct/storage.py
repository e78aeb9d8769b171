"""A trained field on disk: ``field.safetensors`` (weights) + ``field.json`` (its widths and backend).

The reconstruct stage writes one per reconstructed sample set (in ``sample_K/`` sub-folders with
``--select all``); the mesh stage and the evaluation read them back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from img2mesh.utils.files import atomic_write_json

if TYPE_CHECKING:
    from img2mesh.reconstruct.fields import NeuSField


def save_field(field: "NeuSField", folder: Path) -> None:
    """Write the field's weights and configuration into ``folder``."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in field.state_dict().items()},
              str(folder / "field.safetensors"))
    atomic_write_json(folder / "field.json", {"config": field.config.to_dict(), "backend": field.backend})


def load_field(folder: Path, device: str) -> "NeuSField":
    """Rebuild the trained field the stage saved in ``folder``."""
    from safetensors.torch import load_file

    from img2mesh.reconstruct.fields import FieldConfig, NeuSField

    record = json.loads((folder / "field.json").read_text())
    field = NeuSField(FieldConfig(**record["config"]))
    field.load_state_dict(load_file(folder / "field.safetensors"))
    return field.to(device).eval().requires_grad_(False)


def sample_folders(folder: Path) -> list[Path]:
    """``folder`` itself when it holds one result, else its ``sample_K`` sub-folders (``--select all``)."""
    if (folder / "field.json").is_file():
        return [folder]
    return sorted(folder.glob("sample_*/"), key=lambda p: int(p.name.split("_")[1]))
