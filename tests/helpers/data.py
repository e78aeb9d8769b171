"""Where the tests find shared data: the repository, ``../shared/`` (conformance vectors, GSO objects)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # tests/helpers/ -> the repository
SHARED = ROOT.parent / "shared"
GSO = Path(os.environ.get("IMG2MESH_GSO_DIR", SHARED / "gso"))
CHICKEN = ROOT / "assets" / "chicken.png"


def conformance_dir() -> Path:
    """``IMG2MESH_CONFORMANCE_DIR``, default ``../shared/conformance`` beside the repository."""
    return Path(os.environ.get("IMG2MESH_CONFORMANCE_DIR", SHARED / "conformance"))
