"""The ``img2mesh`` command line: parses options, calls the pipeline, prints results. Nothing else."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from img2mesh import __version__
from img2mesh.errors import Img2MeshError

app = typer.Typer(
    name="img2mesh",
    help="Turn a single photo into a coloured 3D mesh: segment -> elevation -> generate -> reconstruct -> mesh.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
weights_app = typer.Typer(help="List, pre-fetch and locate the weight files (for offline machines).",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")

EXIT_INTERRUPTED = 130


def _print_error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)  # one line


def _fail(exc: Img2MeshError, verbose: bool) -> None:
    if verbose:
        from rich.console import Console

        Console(stderr=True).print_exception()
    _print_error(str(exc))
    raise typer.Exit(exc.exit_code)


def _guard(verbose: bool, work: Callable[[], Any]) -> Any:
    """Run ``work`` turning img2mesh errors into one line and an exit code."""
    try:
        return work()
    except Img2MeshError as exc:
        _fail(exc, verbose)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"img2mesh {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """img2mesh: single image to 3D mesh with SyncDreamer and NeuS."""


@app.command()
def run(
    inputs: List[Path] = typer.Argument(..., help="Image files and/or folders of images.", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (one input: OUT/; several: OUT/<stem>/)."),
    preset: str = typer.Option("default", help="Preset: default, smoke, fast, quality."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file layered over the preset."),
    set_: List[str] = typer.Option([], "--set", help="Override KEY=VALUE (dotted key, repeatable)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (run.seed)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N (run.device)."),
    from_stage: Optional[str] = typer.Option(None, "--from", help="Re-run from this stage on."),
    until_stage: Optional[str] = typer.Option(None, "--until", help="Stop after this stage."),
    force: bool = typer.Option(False, "--force", help="Re-run every stage, even up-to-date ones."),
    elevation: Optional[float] = typer.Option(None, help="Input camera elevation in degrees; skips estimation."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", help="Sample sets to generate."),
    formats: Optional[str] = typer.Option(None, "--format", help="Mesh formats, comma-separated: glb,ply,obj."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Path to syncdreamer-pretrain.ckpt."),
    no_segment: bool = typer.Option(False, "--no-segment",
                                    help="Skip background removal: use the image's alpha, or all of it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings, errors and the summary."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug messages and tracebacks."),
) -> None:
    """Run the pipeline on one or more images; finished stages are skipped when nothing changed."""
    from img2mesh.pipeline.batch import RunRequest, run_request
    from img2mesh.pipeline.reporting import Reporter

    values: dict[str, Any] = {}
    for key, value in (("run.seed", seed), ("run.device", device), ("elevation.value", elevation),
                       ("generate.num_samples", num_samples),
                       ("generate.weights", str(weights) if weights else None)):
        if value is not None:
            values[key] = value
    if no_segment:
        values["segment.use_alpha"] = "always"
    if formats is not None:
        values["mesh.formats"] = [f.strip().lower() for f in formats.split(",") if f.strip()]
    request = RunRequest(inputs=inputs, out=out, preset=preset, config_file=config, overrides=list(set_),
                         values=values, from_stage=from_stage, until_stage=until_stage, force=force)
    reporter = Reporter(quiet=quiet, verbose=verbose)
    try:
        results = _guard(verbose, lambda: run_request(request, reporter))
    except KeyboardInterrupt:
        reporter.err.print("[yellow]interrupted[/]: finished stages are kept; run the same command to resume")
        raise typer.Exit(EXIT_INTERRUPTED)
    from img2mesh.pipeline.reporting import batch_table, stage_table

    for result in results:
        reporter.out.print(stage_table(result))
    if len(results) > 1:
        reporter.out.print(batch_table(results))
    failed = [r for r in results if not r.ok]
    for result in failed:
        prefix = f"{result.image.name}: " if len(results) > 1 else ""
        _print_error(f"{prefix}{result.error}")
    if failed:
        raise typer.Exit(failed[0].exit_code if len(results) == 1 else 1)


@app.command()
def stages() -> None:
    """List the stages in order, with what they read, write and depend on."""
    from rich.console import Console

    from img2mesh.pipeline.reporting import stages_table
    from img2mesh.pipeline.stages import default_stages

    Console().print(stages_table(default_stages()))


@app.command()
def doctor() -> None:
    """Report Python, torch, CUDA/GPUs, optional accelerators and which weights are present."""
    from rich.console import Console

    from img2mesh.pipeline.reporting import rows_table
    from img2mesh.utils.doctor import report

    console = Console()
    for title, rows in report().items():
        console.print(rows_table(title, rows))


@weights_app.command("list")
def weights_list() -> None:
    """Every weight file: what uses it, where it comes from, and whether it is here."""
    from rich.console import Console

    from img2mesh.pipeline.reporting import weights_table
    from img2mesh.utils.weights import environment_summary, registry

    console = Console()
    console.print(weights_table(registry()))
    console.print(", ".join(f"{k}: {v}" for k, v in environment_summary().items()))


@weights_app.command("download")
def weights_download(
    names: List[str] = typer.Argument(None, help="Which weights (default: all)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fetch weight files into their caches so that later runs work offline."""
    from img2mesh.utils.weights import get_weight, registry

    entries = _guard(verbose, lambda: [get_weight(n) for n in names] if names else registry())
    failed = 0
    for entry in entries:
        try:
            typer.echo(f"{entry.name}: {entry.download()}")
        except Img2MeshError as exc:
            failed += 1
            typer.echo(f"error: {exc}", err=True)
    if failed:
        raise typer.Exit(1)


@weights_app.command("path")
def weights_path(
    name: str = typer.Argument(..., help="Which weights, e.g. syncdreamer."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Print where a weight file is cached (exit 1 when it is not present)."""
    from img2mesh.errors import WeightsError
    from img2mesh.utils.weights import get_weight

    def locate() -> Path:
        entry = get_weight(name)
        path = entry.locate()
        if path is None:
            raise WeightsError(f"{name} is not downloaded; run `img2mesh weights download {name}`")
        return path

    typer.echo(str(_guard(verbose, locate)))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="img2mesh")


if __name__ == "__main__":
    sys.exit(main())
