"""Test-only stages for Ray batches, importable by Ray's worker processes (tests/ on PYTHONPATH).

Ray workers are other processes, so these stages leave their traces in files next to OUT/:
``ledger.txt`` gets one line per stage run ("stage input pid"). A file ``hang-<input>`` makes stage
``b`` of that input write its process id to ``hang-<input>.pid`` and wait (once: the file is removed
first), so a test can kill the worker mid-input.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from img2mesh.pipeline.contract import Stage, StageContext
from img2mesh.utils.files import atomic_write_text

HANG_SECONDS = 120.0


def ledger(out: Path) -> list[str]:
    """The ledger's lines without the pids ("a photo", "b photo", ...)."""
    path = out.parent / "ledger.txt"
    return [" ".join(line.split()[:2]) for line in path.read_text().splitlines()] if path.is_file() else []


def _note(ctx: StageContext) -> None:
    with open(ctx.run_dir.parent.parent / "ledger.txt", "a", encoding="utf-8") as handle:
        handle.write(f"{ctx.stage} {ctx.run_dir.name} {os.getpid()}\n")


def _body(name: str, reads: tuple[str, ...]):
    def run(ctx: StageContext) -> dict:
        _note(ctx)
        hang = ctx.run_dir.parent.parent / f"hang-{ctx.run_dir.name}"
        # What a retry finds of a killed attempt: nothing in the stage's folder, its scratch in staging.
        facts = {"pid": os.getpid(), "resumed": ctx.resumed, "published_before": (ctx.run_dir / name).exists(),
                 "found_scratch": (ctx.out_dir / "half.txt").exists()}
        (ctx.out_dir / "half.txt").unlink(missing_ok=True)
        if name == "b" and hang.exists():
            hang.unlink()
            atomic_write_text(ctx.out_dir / "half.txt", "half-done")
            atomic_write_text(hang.with_name(hang.name + ".pid"), str(os.getpid()))
            time.sleep(HANG_SECONDS)
        upstream = "".join((ctx.stage_dir(r) / "out.txt").read_text() for r in reads)
        atomic_write_text(ctx.out_dir / "out.txt", f"{upstream}{name}({ctx.input_path.stat().st_size});")
        return facts

    return run


def traced_chain() -> list[Stage]:
    """a -> b -> c; ``a`` validates the input as the real first stage does."""
    from img2mesh.segment.stage import check_input

    def stage(name: str, reads: tuple[str, ...] = (), **extra) -> Stage:
        return Stage(name=name, description=f"test stage {name}", reads=reads, outputs=("out.txt",),
                     config_keys=("run.seed",), run=_body(name, reads), **extra)

    return [stage("a", check_input=check_input), stage("b", ("a",)), stage("c", ("b",), publish=("out.txt",))]


def chain_that_fails_in_workers() -> list[Stage]:
    """``traced_chain`` on the driver; inside a Ray actor, the ImportError of a node without a dependency."""
    import ray

    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        raise ImportError("No module named 'missing_dependency'")
    return traced_chain()
