"""Throughput of a batch: locally, and on a local Ray instance with 1, 2, ... workers (``--ray``).

The same batch (copies of the example photo, each turned a little so every input is its own) runs
through ``img2mesh run`` in a fresh output folder per mode, one mode after the other in this process's
session, so the ratios compare like with like on a shared machine. Settings: the ``smoke`` preset
with the tiny random-weight SyncDreamer and the elevation given (no weights needed); ``--set`` adds
more. The overhead per input is (Ray with one worker - local) / inputs: starting Ray and its worker,
the storage check, and handing out inputs.

    python benchmarks/ray_batch.py [--inputs 4] [--workers 1 2] [--set reconstruct.steps=200 ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "smoke", "--set", "generate.model=tiny", "--set", "generate.random_weights=true",
        "--elevation", "30", "--device", "cpu", "-q"]


def make_inputs(folder: Path, count: int) -> Path:
    """``count`` versions of assets/chicken.png, each rotated by a few degrees."""
    from PIL import Image

    photo = Image.open(ROOT / "assets" / "chicken.png").convert("RGBA")
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        photo.rotate(3 * index, resample=Image.BICUBIC).save(folder / f"chicken{index:02d}.png")
    return folder


def timed_run(inputs: Path, out: Path, extra: list[str]) -> float:
    """Seconds of one ``img2mesh run`` (a fresh process, as a user starts it); failures stop here."""
    command = [sys.executable, "-m", "img2mesh", "run", str(inputs), "-o", str(out), *TINY, *extra]
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({finished.returncode}):\n{finished.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=4)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--set", dest="sets", action="append", default=[], help="more --set KEY=VALUE")
    args = parser.parse_args()
    extra = [item for pair in args.sets for item in ("--set", pair)]
    with tempfile.TemporaryDirectory(prefix="img2mesh-ray-bench-") as scratch:
        root = Path(scratch)
        inputs = make_inputs(root / "inputs", args.inputs)
        modes = [("local", [])] + [(f"Ray, {n} worker(s)", ["--ray", "local", "--workers", str(n)])
                                   for n in args.workers]
        rows = []
        for index, (name, flags) in enumerate(modes):
            out = root / f"out{index}"
            seconds = timed_run(inputs, out, extra + flags)
            rows.append((name, seconds))
            shutil.rmtree(out)
    local = rows[0][1]
    print(f"\n{args.inputs} inputs, smoke preset, tiny random-weight SyncDreamer{' ' + ' '.join(args.sets) if args.sets else ''}")
    print("| mode | wall time | inputs per minute | vs local |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} s | {60 * args.inputs / seconds:.2f} | {local / seconds:.2f}× |")
    one_worker = next((s for n, s in rows if n.startswith("Ray, 1 ")), None)
    if one_worker is not None:
        print(f"\nRay overhead per input (1 worker - local) / inputs: {(one_worker - local) / args.inputs:.1f} s")


if __name__ == "__main__":
    main()
