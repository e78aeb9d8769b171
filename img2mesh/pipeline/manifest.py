"""``OUT/img2mesh.json``: what ran, with which input and config, and what each stage wrote."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from img2mesh.utils.files import atomic_write_json, sha256_file

MANIFEST_NAME = "img2mesh.json"
SCHEMA = 1
log = logging.getLogger("img2mesh")


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_record(path: Path) -> dict[str, Any]:
    """Size and digest of an output file, as the manifest stores it."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def read_only_manifest(run_dir: Path) -> Optional[dict[str, Any]]:
    """The manifest's data for reading only: None when absent or unreadable (left where it is)."""
    try:
        data = json.loads((Path(run_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("stages", {}), dict) else None


class Manifest:
    """The run manifest of one output folder; every save is atomic."""

    def __init__(self, run_dir: Path, data: Optional[dict[str, Any]] = None) -> None:
        self.path = Path(run_dir) / MANIFEST_NAME
        # Key order is the reading order of the file: what ran on what, then each stage.
        empty = {"schema": SCHEMA, "img2mesh_version": None, "input": None, "config": None,
                 "device": None, "updated": None, "stages": {}}
        self.data: dict[str, Any] = data or empty
        self.data.setdefault("stages", {})

    @classmethod
    def load(cls, run_dir: Path) -> "Manifest":
        """Read the manifest, or start an empty one. An unreadable one is kept aside, not trusted."""
        path = Path(run_dir) / MANIFEST_NAME
        if not path.exists():
            return cls(run_dir)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
                raise ValueError("not a manifest")
        except (OSError, ValueError) as exc:
            backup = path.with_name(MANIFEST_NAME + ".unreadable")
            path.replace(backup)
            log.warning("%s was unreadable (%s); kept as %s, every stage will run", path, exc, backup.name)
            return cls(run_dir)
        return cls(run_dir, data)

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def stage(self, name: str) -> dict[str, Any]:
        """The record of one stage (empty when it never ran)."""
        return self.stages.get(name, {})

    def set_stage(self, name: str, **fields: Any) -> None:
        """Replace a stage's record with ``fields`` and save."""
        self.stages[name] = fields
        self.save()

    def update_stage(self, name: str, **fields: Any) -> None:
        """Merge ``fields`` into a stage's record and save."""
        self.stages.setdefault(name, {}).update(fields)
        self.save()

    def save(self) -> None:
        self.data["updated"] = now_iso()
        atomic_write_json(self.path, self.data)

    def outputs_intact(self, name: str, stage_dir: Path) -> bool:
        """True when every output recorded for a stage is still there with its recorded size."""
        outputs = self.stage(name).get("outputs")
        if not isinstance(outputs, dict):
            return False
        for rel, record in outputs.items():
            path = stage_dir / rel
            if not path.is_file() or path.stat().st_size != record.get("size"):
                return False
        return True
