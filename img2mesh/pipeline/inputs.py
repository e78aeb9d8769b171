"""Turning the command line's INPUT... into (image, output folder) pairs, before anything is written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from img2mesh.errors import UsageError

# What a folder's images are: every format a single file argument is read in (a GIF: its first frame).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


@dataclass(frozen=True)
class RunInput:
    """One image and the folder its run writes into."""

    image: Path
    run_dir: Path


def collect_images(paths: Sequence[Path]) -> tuple[list[Path], bool]:
    """Expand files and folders (a folder's images, sorted, not recursive).

    Returns the images and whether this is a batch: more than one argument, or any folder, so a
    script pointed at a folder always gets ``OUT/<stem>/`` whatever the folder holds.
    """
    if not paths:
        raise UsageError("no INPUT given; pass image files and/or folders of images")
    images: list[Path] = []
    batch = len(paths) > 1
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"input {path} does not exist")
        if path.is_dir():
            batch = True
            found = sorted(
                p for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                raise UsageError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            images.extend(found)
        else:
            images.append(path)
    seen: dict[Path, Path] = {}
    for image in images:
        key = image.resolve()
        if key in seen:
            same = f" (also as {seen[key]})" if str(seen[key]) != str(image) else ""
            raise UsageError(f"input {image} is given twice{same}")
        seen[key] = image
    return images, batch


def assign_run_dirs(images: Sequence[Path], out: Path, batch: bool) -> list[RunInput]:
    """One input writes into ``out``; a batch into ``out/<stem>``, ``out/<stem>-2``, ... in input order."""
    if not batch:
        return [RunInput(images[0], out)]
    taken: dict[str, int] = {}
    runs = []
    for image in images:
        stem = image.stem
        count = taken.get(stem, 0) + 1
        taken[stem] = count
        name = stem if count == 1 else f"{stem}-{count}"
        runs.append(RunInput(image, out / name))
    return runs


def check_output_dir(out: Path) -> None:
    """Refuse an OUT that is a file or cannot be written, before anything is created."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"cannot create output {out}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to output {out}: no write permission on {probe}")

