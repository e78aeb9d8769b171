"""Which of the generated sample sets a run goes on with (``reconstruct.select``); the enhance and
reconstruct stages both follow it."""

from __future__ import annotations

from typing import Any


def selected_samples(select: Any, scores: dict) -> list[int]:
    """The sample sets ``reconstruct.select`` asks for, given the generate stage's ``scores.json``."""
    from img2mesh.errors import StageError

    count = len(scores["samples"])
    if select == "auto":
        return [int(scores["best_sample"])]
    if select == "all":
        return list(range(count))
    if not 0 <= select < count:
        raise StageError(f"--select {select}: the generate stage made {count} sample set(s) (0..{count - 1})")
    return [int(select)]
