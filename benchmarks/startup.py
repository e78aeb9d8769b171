"""How long the CLI takes to start (`img2mesh --help`), median of several runs.

The target is well under a second: heavy libraries (torch, diffusers, carvekit) are imported
only by the commands and stages that need them.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def time_command(args: list[str], repeats: int = 7) -> float:
    """Median wall time of running ``args`` in a fresh interpreter."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    cases = {
        "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
        "img2mesh --help": [sys.executable, "-m", "img2mesh", "--help"],
        "img2mesh --version": [sys.executable, "-m", "img2mesh", "--version"],
        "img2mesh stages": [sys.executable, "-m", "img2mesh", "stages"],
    }
    print(f"{'command':40s} median s")
    for name, args in cases.items():
        print(f"{name:40s} {time_command(args):.3f}")


if __name__ == "__main__":
    main()
