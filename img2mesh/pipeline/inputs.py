"""Turning the command line's INPUT... into (image, output folder) pairs, before anything is written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from img2mesh.errors import InputError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


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
            raise UsageError(f"input {image} is given twice (also as {seen[key]})")
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


def check_image(path: Path, max_pixels: int) -> tuple[int, int]:
    """Open the header of an image (no full decode) and return its (width, height).

    The segment stage does the thorough validation; this catches what must never reach a run
    folder: a file that is not an image, a zero-size image, or a decompression bomb.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = max_pixels  # PIL then refuses bombs before allocating their pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise InputError(
                        f"{path} has {width}x{height} = {width * height} pixels, over "
                        f"segment.max_pixels = {max_pixels}"
                    )
                img.verify()  # checks the structure (PNG CRCs) without decoding
            with Image.open(path) as img:
                img.load()  # a full decode catches truncated data that verify() misses
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image PIL can read") from None
    except Image.DecompressionBombError:
        raise InputError(f"{path} is too large to decode safely (over segment.max_pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path} is unreadable or corrupt ({exc})") from None
    if width == 0 or height == 0:
        raise InputError(f"{path} is an empty image ({width}x{height})")
    return width, height
