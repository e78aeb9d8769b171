"""Results as plain data: what ``--json`` prints and what the HTML report reads.

One document per command (``SCHEMA`` below, described in the README): whether the command
succeeded, its exit code, and per input its output folder, status, failure kind and line, the
final artifacts with sizes and digests (taken from the manifest, not re-hashed) and the seconds
each stage took.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from img2mesh import __version__
from img2mesh.pipeline.manifest import Manifest, read_only_manifest
from img2mesh.pipeline.runner import RunResult

SCHEMA = 1
REPORT_NAME = "report.html"  # written into each input's OUT by the report package, after the run


def artifacts(result: RunResult, manifest: Manifest) -> list[dict[str, Any]]:
    """Every file the stages published into the run folder, with its size and SHA-256."""
    found = []
    for outcome in result.outcomes:
        recorded = manifest.stage(outcome.stage).get("outputs", {})
        for name in outcome.outputs:
            record = recorded.get(name, {})
            found.append({"path": name, "stage": outcome.stage, "size": record.get("size"),
                          "sha256": record.get("sha256")})
    return found


def stage_records(result: RunResult, manifest: Manifest) -> list[dict[str, Any]]:
    """Per stage: this command's status and seconds, and the seconds of the run that made its result."""
    records = []
    for outcome in result.outcomes:
        made_in = manifest.stage(outcome.stage).get("seconds")
        records.append({"stage": outcome.stage, "status": outcome.status, "seconds": round(outcome.seconds, 3),
                        "result_seconds": made_in, "error": outcome.error})
    return records


def read_manifest(run_dir: Path) -> Manifest:
    """The run folder's manifest for reading only: empty when absent or unreadable (left as it is)."""
    return Manifest(run_dir, read_only_manifest(run_dir))


def input_record(result: RunResult) -> dict[str, Any]:
    """One input's entry of the document."""
    manifest = read_manifest(result.run_dir)
    return {
        "input": str(result.image),
        "out": str(result.run_dir),
        "status": "ok" if result.ok else "failed",
        "exit_code": result.exit_code,
        "category": result.category,
        "error": result.error,
        "seconds": round(result.seconds, 3),
        "random_weights": manifest.data.get("random_weights", []),  # non-empty: the result is noise
        "report": str(result.run_dir / REPORT_NAME) if (result.run_dir / REPORT_NAME).is_file() else None,
        "stages": stage_records(result, manifest),
        "artifacts": artifacts(result, manifest),
    }


def document(results: Sequence[RunResult], exit_code: int, error: Optional[str] = None,
             category: Optional[str] = None) -> dict[str, Any]:
    """The whole command's document: ``error``/``category`` when it failed before or around the inputs."""
    return {
        "schema": SCHEMA,
        "img2mesh_version": __version__,
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "category": category,
        "error": error,
        "inputs": [input_record(r) for r in results],
    }
