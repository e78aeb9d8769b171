"""Running a request: resolve config and device, expand inputs, run each one, keep going on failure.

The stages come from the caller (``img2mesh.app`` assembles them); nothing here knows which they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from img2mesh.errors import UsageError
from img2mesh.pipeline.config import Config, load_config
from img2mesh.pipeline.contract import Reporter, Stage
from img2mesh.pipeline.inputs import assign_run_dirs, check_output_dir, collect_images
from img2mesh.pipeline.lock import RunLock
from img2mesh.pipeline.runner import Runner, RunResult, stage_range

if TYPE_CHECKING:
    from img2mesh.pipeline.cluster import ClusterOptions, StagesFactory, Watch

AfterEach = Callable[[RunResult], None]  # e.g. the HTML report of one input
AfterBatch = Callable[[Path, list[RunResult]], None]  # e.g. the batch's index page


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


def checked_config(request: RunRequest, schema: type, stages: Sequence[Stage]) -> Config:
    """The request's config (of ``schema``), checked by every stage in the requested range
    (``Stage.check_config``)."""
    config = load_config(schema, request.preset, request.config_file, request.overrides, request.values)
    start, end = stage_range(stages, request.from_stage, request.until_stage)
    for stage in stages[start:end + 1]:
        if stage.check_config is not None:
            stage.check_config(config)
    return config


def resolve(request: RunRequest, schema: type, stages: Sequence[Stage]) -> tuple[Config, list, bool]:
    """Validate everything that can be validated before a single file is written."""
    config = checked_config(request, schema, stages)
    images, batch = collect_images(request.inputs)
    check_output_dir(request.out)
    return config, assign_run_dirs(images, request.out, batch), batch


def run_folder(request: RunRequest, schema: type, stages: Sequence[Stage], reporter: Optional[Reporter] = None,
               after_each: Optional[AfterEach] = None) -> RunResult:
    """The stages on one folder given as the input (``img2mesh reconstruct VIEWS_DIR``)."""
    from img2mesh.utils.device import resolve_device

    config = checked_config(request, schema, stages)
    (folder,) = request.inputs
    if not Path(folder).is_dir():
        raise UsageError(f"views folder {folder} does not exist or is not a folder")
    check_output_dir(request.out)
    for stage in stages:  # a bad views folder is the command's usage error, as a bad image list is run's
        if stage.check_input is not None:
            stage.check_input(Path(folder), config)
    runner = Runner(stages, config, resolve_device(config.run.device), reporter)
    try:
        result = runner.run(Path(folder), request.out, from_stage=request.from_stage,
                            until_stage=request.until_stage, force=request.force)
    finally:
        runner.close()
    if after_each is not None:
        after_each(result)
    return result


def run_request_on_cluster(request: RunRequest, schema: type, stages_factory: "StagesFactory", cluster: "ClusterOptions",
                           watch: Optional["Watch"] = None, after_each: Optional[AfterEach] = None,
                           after_batch: Optional[AfterBatch] = None) -> list[RunResult]:
    """``run_request`` with the inputs spread over a Ray cluster's workers (``--ray``).

    The request is validated here, on the driver, before Ray starts; each worker builds its own
    stages with ``stages_factory`` (a module-level function, so that Ray can send it).
    """
    from img2mesh.pipeline.cluster import import_ray, run_on_cluster

    import_ray()  # the missing extra is the first thing to say
    config, runs, batch = resolve(request, schema, stages_factory())
    options = dict(from_stage=request.from_stage, until_stage=request.until_stage, force=request.force)
    return run_on_cluster(config, runs, batch, request.out, stages_factory, options, cluster, watch,
                          after_each, after_batch)


def run_request(request: RunRequest, schema: type, stages: Sequence[Stage], reporter: Optional[Reporter] = None,
                after_each: Optional[AfterEach] = None, after_batch: Optional[AfterBatch] = None) -> list[RunResult]:
    """Run every input of a request; per-input failures are in the results, usage errors raise.

    ``after_each`` sees each input's result as soon as it is done, ``after_batch`` all of a batch's.
    """
    from img2mesh.utils.device import resolve_device

    stages = list(stages)
    config, runs, batch = resolve(request, schema, stages)
    device = resolve_device(config.run.device)
    runner = Runner(stages, config, device, reporter)
    options = dict(from_stage=request.from_stage, until_stage=request.until_stage, force=request.force)
    try:
        if not batch:
            results = [runner.run(runs[0].image, runs[0].run_dir, **options)]
            if after_each is not None:
                after_each(results[0])
            return results
        results = []
        with RunLock(request.out):
            for number, item in enumerate(runs, 1):
                runner.reporter.section(f"[{number}/{len(runs)}] {item.image}")
                results.append(runner.run(item.image, item.run_dir, more_inputs=number < len(runs), **options))
                if after_each is not None:
                    after_each(results[-1])
            if after_batch is not None:
                after_batch(request.out, results)
        return results
    finally:
        runner.close()
