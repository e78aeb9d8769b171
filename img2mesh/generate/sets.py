"""The sample sets, in one place beside their writer: generate's layout (``sample_K/`` folders and
``scores.json``), which sets a run goes on with (``reconstruct.select``), and the one shape of every later
stage's per-set results.

A later stage (enhance, reconstruct, mesh, refine) works on the chosen sets. With one set (``select``
auto or K) its result sits in the stage's folder itself; with ``--select all``, each set's result is in
``sample_K/`` and the stage's facts are ``{"per_sample": {"sample_K": facts, ...}}``. :func:`for_each_set`
is that fan-out, :func:`result_folders` reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from img2mesh.errors import StageError

SCORES_FILE = "scores.json"  # generate's: per set its score, and the best one
PER_SET = "per_sample"  # the facts of a stage that made one result per set


def set_name(k: int) -> str:
    """The folder of sample set ``k`` (``sample_K``)."""
    return f"sample_{k}"


def set_index(folder: Path) -> int:
    """K of a ``sample_K`` folder."""
    return int(folder.name.split("_")[1])


def chosen_sets(select: Any, generate_dir: Path) -> list[int]:
    """The sample sets ``reconstruct.select`` asks for, from generate's ``scores.json``: the best one
    (auto), set K, or every set (all)."""
    scores = json.loads((generate_dir / SCORES_FILE).read_text())
    count = len(scores["samples"])
    if select == "auto":
        return [int(scores["best_sample"])]
    if select == "all":
        return list(range(count))
    if not 0 <= select < count:
        raise StageError(f"--select {select}: the generate stage made {count} sample set(s) (0..{count - 1})")
    return [int(select)]


def for_each_set(sets: list[int], out_dir: Path, every: bool, work: Callable[[int, Path], dict[str, Any]],
                 log: Optional[Any] = None, done: Optional[Callable[[Path], bool]] = None) -> dict[str, Any]:
    """``work(k, folder)`` for each chosen set: one set (``every`` False) writes into ``out_dir`` and its facts
    are the stage's; ``every`` (``--select all``) writes each into ``out_dir/sample_K`` and the facts are
    ``{"per_sample": {"sample_K": ...}}``. ``done(folder)`` True skips a set an interrupted attempt finished."""
    if not every:
        (k,) = sets
        return work(k, out_dir)
    per_set: dict[str, Any] = {}
    for position, k in enumerate(sets):
        folder = out_dir / set_name(k)
        if done is not None and done(folder):
            if log is not None:
                log.info("sample set %d was finished by the interrupted attempt", k)
            continue
        if log is not None:
            log.info("sample set %d (%d of %d)", k, position + 1, len(sets))
        per_set[set_name(k)] = work(k, folder)
    return {PER_SET: per_set}


def result_folders(stage_dir: Path, marker: str) -> list[tuple[Optional[int], Path]]:
    """Where a stage put its results: ``[(None, stage_dir)]`` when the folder itself holds one (its
    ``marker`` file), else each ``sample_K`` sub-folder with K, in order."""
    if (stage_dir / marker).is_file():
        return [(None, stage_dir)]
    folders = [f for f in stage_dir.glob("sample_*/") if (f / marker).is_file()]
    return [(set_index(f), f) for f in sorted(folders, key=set_index)]
