"""``img2mesh run``: resolve config and device, expand inputs, run each one, keep going on failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from img2mesh.errors import UsageError
from img2mesh.pipeline.config import Config, load_config
from img2mesh.pipeline.inputs import assign_run_dirs, check_output_dir, collect_images
from img2mesh.pipeline.lock import RunLock
from img2mesh.pipeline.reporting import Reporter
from img2mesh.pipeline.runner import RunResult, Runner, stage_range
from img2mesh.pipeline.stage import Stage


@dataclass
class RunRequest:
    """Everything ``img2mesh run`` was asked for, before validation."""

    inputs: Sequence[Path]
    out: Path
    preset: str = "default"
    config_file: Optional[Path] = None
    overrides: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    from_stage: Optional[str] = None
    until_stage: Optional[str] = None
    force: bool = False


def resolve(request: RunRequest, stages: Sequence[Stage]) -> tuple[Config, list, bool]:
    """Validate everything that can be validated before a single file is written."""
    config = load_config(request.preset, request.config_file, request.overrides, request.values)
    stage_range(stages, request.from_stage, request.until_stage)
    select = config.reconstruct.select
    if isinstance(select, int) and select >= config.generate.num_samples:
        raise UsageError(f"--select {select}: there are only {config.generate.num_samples} sample set(s) "
                         f"(0..{config.generate.num_samples - 1}); raise --num-samples or pick another")
    checkpoint = config.generate.checkpoint
    if checkpoint is not None and not Path(checkpoint).expanduser().is_file():
        raise UsageError(f"weights file {checkpoint} does not exist")
    images, batch = collect_images(request.inputs)
    check_output_dir(request.out)
    return config, assign_run_dirs(images, request.out, batch), batch


def reconstruct_request(request: RunRequest, reporter: Reporter) -> RunResult:
    """``img2mesh reconstruct VIEWS_DIR``: the reconstruct and mesh stages on one folder of views."""
    from img2mesh.pipeline.stages import reconstruct_stages
    from img2mesh.utils.device import resolve_device

    stages = reconstruct_stages()
    config = load_config(request.preset, request.config_file, request.overrides, request.values)
    stage_range(stages, request.from_stage, request.until_stage)
    (folder,) = request.inputs
    if not Path(folder).is_dir():
        raise UsageError(f"views folder {folder} does not exist or is not a folder")
    check_output_dir(request.out)
    runner = Runner(stages, config, reporter, resolve_device(config.run.device))
    try:
        return runner.run(Path(folder), request.out, from_stage=request.from_stage,
                          until_stage=request.until_stage, force=request.force)
    finally:
        runner.close()


def run_request(request: RunRequest, reporter: Reporter, stages: Optional[Sequence[Stage]] = None) -> list[RunResult]:
    """Run every input of a request; per-input failures are in the results, usage errors raise."""
    from rich.markup import escape

    from img2mesh.pipeline.stages import default_stages
    from img2mesh.utils.device import resolve_device

    stages = list(stages) if stages is not None else default_stages()
    config, runs, batch = resolve(request, stages)
    device = resolve_device(config.run.device)
    runner = Runner(stages, config, reporter, device)
    options = dict(from_stage=request.from_stage, until_stage=request.until_stage, force=request.force)
    try:
        if not batch:
            return [runner.run(runs[0].image, runs[0].run_dir, **options)]
        results = []
        with RunLock(request.out):
            for number, item in enumerate(runs, 1):
                reporter.err.rule(escape(f"[{number}/{len(runs)}] {item.image}"), style="dim")
                results.append(runner.run(item.image, item.run_dir, more_inputs=number < len(runs), **options))
        return results
    finally:
        runner.close()
