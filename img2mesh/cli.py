"""The ``img2mesh`` command line: parses options, calls the pipeline, prints results. Nothing else."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional

import typer
from typer.core import TyperGroup

from img2mesh import __version__
from img2mesh.app import stage_names
from img2mesh.errors import Img2MeshError, UsageError
from img2mesh.pipeline.config import PRESETS


class OneLineErrors(TyperGroup):
    """The command group: a usage error found while parsing (an unknown flag, a bad value, a missing
    ``-o``) is one ``error:`` line and exit 2, like every other usage error, and with ``--json`` also
    the JSON document on stdout, as the README promises for every failure."""

    def main(self, args: Optional[List[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        errors = _click_exceptions()
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                **extra)
        except errors.NoArgsIsHelpError:  # no command at all: the help, and exit 2 as before
            super().main(args=["--help"], prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                         **extra)
            sys.exit(2)
        except errors.ClickException as exc:
            command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "img2mesh"
            message = f"{_option_message(exc, errors)} (see {command} --help)"
            if "--json" in argv:
                from img2mesh.pipeline.summary import document

                _print_json(document([], exc.exit_code, message, "usage"), sys.stdout)
            _print_error(message)
            sys.exit(exc.exit_code)
        except typer.Abort:
            _print_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _option_message(exc: Any, errors: Any) -> str:
    """Click's message; for an unknown option, only the options its name is close to (click suggests
    anything sharing a few letters: --bogus got "--out, --verbose")."""
    if not isinstance(exc, errors.NoSuchOption) or not exc.possibilities:
        return exc.format_message()
    import difflib

    close = difflib.get_close_matches(exc.option_name, list(exc.possibilities), n=3, cutoff=0.75)
    return f"{exc.message}" + (f"; did you mean {' or '.join(close)}?" if close else "")


def _click_exceptions() -> Any:
    """The exceptions of the click that typer runs on (recent typer vendors its own copy)."""
    import typer.core

    # recent typer vendors click as typer.core._click; older typer imports the click package itself
    click = getattr(typer.core, "_click", None) or typer.core.click
    return click.exceptions


def _help_without_python_types() -> None:
    """Recent typer shows a required argument as ``{NAME}...`` in the usage line, its Python type
    (``<list[Path]>``) beside it, and ``<bool>`` beside every flag (``--help`` too). Here an argument
    with a metavar shows just that, as click does, and a flag shows no type. Done on typer's own
    classes, guarded, so a typer without these methods is left as it is."""
    from typer.core import TyperArgument, TyperOption

    usage = getattr(TyperArgument, "_usage_display_name", None)
    if usage is None or getattr(usage, "img2mesh", False):
        return

    def metavar_usage(self: Any) -> str:
        return self.metavar if self.metavar else usage(self)

    metavar_usage.img2mesh = True  # type: ignore[attr-defined]
    TyperArgument._usage_display_name = metavar_usage
    argument_type = TyperArgument.display_type_rich
    TyperArgument.display_type_rich = lambda self, ctx: "" if self.metavar else argument_type(self, ctx)
    option_type = TyperOption.display_type_rich
    TyperOption.display_type_rich = lambda self, ctx: "" if getattr(self, "is_flag", False) and self.metavar is None \
        else option_type(self, ctx)


_help_without_python_types()

app = typer.Typer(
    name="img2mesh",
    help="Turn a single photo into a coloured 3D mesh: " + " -> ".join(stage_names()) + ".",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)
weights_app = typer.Typer(help="List, pre-fetch and locate the weight files (for offline machines).",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what batch schedulers send


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (finished stages kept, one line, a resumable exit)."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()

# Options shared by `run` and `reconstruct`, declared once.
PresetOpt = Annotated[str, typer.Option(metavar="|".join(PRESETS),
                                         help="What to run at (README: presets); demo: tiny untrained models, noise.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", metavar="FILE.yaml",
                                                   help="YAML file layered over the preset.")]
SetOpt = Annotated[List[str], typer.Option("--set", metavar="KEY=VALUE",
                                           help="Override one config key (dotted key, YAML value; repeatable).")]
SeedOpt = Annotated[Optional[int], typer.Option(metavar="N", help="Random seed, 0 to 2^32 - 1 (run.seed).")]
DeviceOpt = Annotated[Optional[str], typer.Option(metavar="auto|cpu|cuda|cuda:N", help="Where to run (run.device).")]
STAGES = "|".join(stage_names())
FromOpt = Annotated[Optional[str], typer.Option("--from", metavar=STAGES, help="Re-run from this stage on.")]
UntilOpt = Annotated[Optional[str], typer.Option("--until", metavar=STAGES, help="Stop after this stage.")]
ForceOpt = Annotated[bool, typer.Option("--force", metavar="", help="Re-run every stage, even up-to-date ones.")]
FormatOpt = Annotated[Optional[str], typer.Option("--format", metavar="glb,ply,obj",
                                                  help="Mesh formats, comma-separated (mesh.formats).")]
TextureOpt = Annotated[Optional[bool], typer.Option("--texture/--no-texture", metavar="",
                                                    help="Bake a UV texture into GLB/OBJ (mesh.texture; default on).")]
TargetFacesOpt = Annotated[Optional[int], typer.Option("--target-faces", min=4, metavar="N",
                                                       help="Decimate to about N faces (mesh.target_faces).")]
RemeshOpt = Annotated[Optional[str], typer.Option("--remesh", metavar="none|quad",
                                                  help="quad: also write mesh_quad.obj, quads of about "
                                                       "--target-faces (mesh.remesh).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="Only warnings, errors and the summary.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", metavar="", help="Debug messages and tracebacks.")]
OfflineOpt = Annotated[bool, typer.Option("--offline", metavar="", help="Never touch the network: weights come from "
                                                                        "the local caches or fail at once "
                                                                        "(HF_HUB_OFFLINE=1).")]
JsonOpt = Annotated[bool, typer.Option("--json", metavar="", help="Print one JSON document of the results on stdout "
                                                                  "(messages stay on stderr).")]


def _reporter(quiet: bool, verbose: bool) -> Any:
    """The console reporter; --quiet with --verbose is a contradiction, not a silent choice."""
    from img2mesh.console import ConsoleReporter

    if quiet and verbose:
        raise UsageError("--quiet and --verbose contradict each other; give one")
    return ConsoleReporter(quiet=quiet, verbose=verbose)


def _print_error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)  # one line


def _fail(exc: Img2MeshError, verbose: bool, json_to: Any = None) -> None:
    """One error line (the trace with --verbose) and the exit code; with ``json_to`` (--json) the
    command's document, with no inputs, goes there first."""
    if json_to is not None:
        from img2mesh.pipeline.summary import document

        _print_json(document([], exc.exit_code, str(exc), exc.category), json_to)
    if verbose:
        from rich.console import Console

        Console(stderr=True).print_exception()
    _print_error(str(exc))
    raise typer.Exit(exc.exit_code)


def _checked(work: Callable[[], Any], verbose: bool, as_json: bool) -> Any:
    """``work()``, its usage errors reported as every failure is (one line; the document with --json)."""
    try:
        return work()
    except Img2MeshError as exc:
        _fail(exc, verbose, sys.stdout if as_json else None)


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
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, metavar="",
                                 help="Print the version and exit."),
) -> None:
    """img2mesh: single image to 3D mesh with SyncDreamer and NeuS."""


@app.command()
def run(
    inputs: List[Path] = typer.Argument(..., metavar="IMAGE_OR_FOLDER...", help="Image files and/or folders of images.",
                                        show_default=False),
    out: Path = typer.Option(..., "-o", "--out", metavar="OUT",
                             help="Output folder (one input: OUT/; several: OUT/<stem>/)."),
    preset: PresetOpt = "default",
    config: ConfigOpt = None,
    set_: SetOpt = [],
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    from_stage: FromOpt = None,
    until_stage: UntilOpt = None,
    force: ForceOpt = False,
    elevation: Optional[float] = typer.Option(None, metavar="DEG", help="Input camera elevation in degrees (-90 to "
                                                                       "90); skips estimation."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", metavar="N",
                                              help="Sample sets to generate (default auto: 1 on the CPU, by free "
                                                   "memory on a GPU, at most 4)."),
    formats: FormatOpt = None,
    texture: TextureOpt = None,
    target_faces: TargetFacesOpt = None,
    remesh: RemeshOpt = None,
    select: Optional[str] = typer.Option(None, "--select", metavar="auto|K|all",
                                         help="Sample set to reconstruct: the best score, set K, or every set."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", metavar="FILE",
                                              help="Path to syncdreamer-pretrain.ckpt (generate.checkpoint; "
                                                   "--weights is the old name)."),
    weights: Optional[Path] = typer.Option(None, "--weights", hidden=True),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", metavar="",
                                          help="Allow unpickling a checkpoint that safe loading refuses."),
    no_segment: bool = typer.Option(False, "--no-segment", metavar="",
                                    help="Skip background removal: use the image's alpha, or all of it."),
    prompt: Optional[str] = typer.Option(None, "--prompt", metavar="TEXT",
                                         help="A caption of the object: what enhance and refine guide with "
                                              "(enhance.prompt, refine.prompt)."),
    offline: OfflineOpt = False,
    ray: Optional[str] = typer.Option(None, "--ray", metavar="auto|local|ADDRESS",
                                      help="Spread the inputs over a Ray cluster's workers (pip install "
                                           "'img2mesh\\[ray]'); auto joins the running cluster, else starts one here."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, metavar="N",
                                          help="With --ray: at most this many workers (default: one per GPU)."),
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the pipeline on one or more images; finished stages are skipped when nothing changed."""
    from img2mesh.pipeline.batch import RunRequest

    values = _flag_values(seed=seed, device=device, formats=formats, elevation=elevation,
                          num_samples=num_samples, checkpoint=checkpoint or weights, texture=texture,
                          target_faces=target_faces, remesh=remesh)
    if select is not None:
        values["reconstruct.select"] = int(select) if select.strip().isdigit() else select.strip().lower()
    if no_segment:
        values["segment.use_alpha"] = "always"
    if prompt is not None:
        values["enhance.prompt"] = values["refine.prompt"] = prompt
    if trust_checkpoint:
        values["generate.trust_checkpoint"] = True
    request = RunRequest(inputs=inputs, out=out, preset=preset, config_file=config, overrides=list(set_),
                         values=values, from_stage=from_stage, until_stage=until_stage, force=force)
    if offline:
        from img2mesh.utils.network import go_offline

        go_offline()
    reporter = _checked(lambda: _reporter(quiet, verbose), False, as_json)
    _run_and_report(lambda: _run_images(request, reporter, ray, workers), reporter, verbose, as_json)


def _run_images(request: Any, reporter: Any, ray: Optional[str], workers: Optional[int]) -> list:
    """Here, one input after another; with ``--ray``, on a cluster's workers under a live table."""
    from img2mesh.app import run_images

    if ray is None:
        if workers is not None:
            raise UsageError("--workers needs --ray (without it the inputs run one after another here)")
        return run_images(request, reporter)
    from img2mesh.pipeline.cluster import ClusterOptions

    with reporter.batch_display() as watch:
        return run_images(request, reporter, ClusterOptions(ray.strip(), workers), watch)


def _flag_values(seed: Optional[int] = None, device: Optional[str] = None, formats: Optional[str] = None,
                 elevation: Optional[float] = None, num_samples: Optional[int] = None,
                 checkpoint: Optional[Path] = None, texture: Optional[bool] = None,
                 target_faces: Optional[int] = None, remesh: Optional[str] = None) -> dict[str, Any]:
    """Dotted config keys set by dedicated flags (they win over --set)."""
    values: dict[str, Any] = {}
    for key, value in (("run.seed", seed), ("run.device", device), ("elevation.value", elevation),
                       ("generate.num_samples", num_samples), ("mesh.texture", texture),
                       ("mesh.target_faces", target_faces), ("mesh.remesh", remesh),
                       ("generate.checkpoint", str(checkpoint) if checkpoint else None)):
        if value is not None:
            values[key] = value
    if formats is not None:
        values["mesh.formats"] = [f.strip().lower() for f in formats.split(",") if f.strip()]
    return values


def _print_json(document: dict, stdout: Any) -> None:
    import json

    stdout.write(json.dumps(document, indent=2) + "\n")
    stdout.flush()


def _run_and_report(work: Callable[[], list], reporter: Any, verbose: bool, as_json: bool) -> None:
    """Run ``work`` (a list of results), then print tables, or with ``as_json`` one JSON document.

    With ``as_json`` everything else that would reach stdout while working goes to stderr, so stdout
    holds the document alone, whatever happens (a usage error and Ctrl-C print one as well).
    """
    import contextlib

    stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            results = work()
    except Img2MeshError as exc:
        _fail(exc, verbose, stdout if as_json else None)
    except KeyboardInterrupt as exc:
        code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        what = "terminated (SIGTERM)" if code == EXIT_TERMINATED else "interrupted"
        reporter.err.print(f"[yellow]{what}[/]: finished stages are kept; run the same command to resume")
        if as_json:
            from img2mesh.pipeline.summary import document

            _print_json(document([], code, what, "interrupted"), stdout)
        raise typer.Exit(code)
    _report(results, reporter, stdout if as_json else None)


def _report(results: list, reporter: Any, json_to: Any = None) -> None:
    """Summary tables on stdout (or the JSON document to ``json_to``), one error line per failed
    input on stderr, and the exit code."""
    from img2mesh.console import batch_table, stage_table

    failed = [r for r in results if not r.ok]
    exit_code = (failed[0].exit_code if len(results) == 1 else 1) if failed else 0
    if json_to is not None:
        from img2mesh.pipeline.summary import document

        _print_json(document(results, exit_code), json_to)
    else:
        for result in results:
            if result.outcomes:  # an input refused before any stage has no table, only its error line
                reporter.out.print(stage_table(result))
        if len(results) > 1:
            reporter.out.print(batch_table(results))
    for result in failed:
        prefix = f"{result.image.name}: " if len(results) > 1 else ""
        _print_error(f"{prefix}{result.error}")
    if failed:
        raise typer.Exit(exit_code)


@app.command()
def reconstruct(
    views: Path = typer.Argument(..., metavar="VIEWS_FOLDER", help="Folder of views 0.png..N.png (+ cameras.json; "
                                                                    "default: the 16 SyncDreamer cameras)."),
    out: Path = typer.Option(..., "-o", "--out", metavar="OUT", help="Output folder."),
    preset: PresetOpt = "default",
    config: ConfigOpt = None,
    set_: SetOpt = [],
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    from_stage: FromOpt = None,
    until_stage: UntilOpt = None,
    force: ForceOpt = False,
    formats: FormatOpt = None,
    texture: TextureOpt = None,
    target_faces: TargetFacesOpt = None,
    remesh: RemeshOpt = None,
    offline: OfflineOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run only the reconstruct and mesh stages on a folder of views at known cameras."""
    from img2mesh.app import run_views
    from img2mesh.pipeline.batch import RunRequest

    request = RunRequest(inputs=[views], out=out, preset=preset, config_file=config, overrides=list(set_),
                         values=_flag_values(seed=seed, device=device, formats=formats, texture=texture,
                                             target_faces=target_faces, remesh=remesh),
                         from_stage=from_stage, until_stage=until_stage, force=force)
    if offline:
        from img2mesh.utils.network import go_offline

        go_offline()
    reporter = _checked(lambda: _reporter(quiet, verbose), False, as_json)
    _run_and_report(lambda: [run_views(request, reporter)], reporter, verbose, as_json)


@app.command("eval")
def evaluate(
    prediction: Path = typer.Argument(..., metavar="MESH", help="Predicted mesh (an img2mesh export, or --frame world)."),
    gt: Path = typer.Option(..., "--gt", metavar="MESH", help="Ground-truth mesh, e.g. ../shared/gso/NAME/model.obj."),
    object_name: str = typer.Option(..., "--object", metavar="NAME", help="GSO object name (sets the ground-truth "
                                                                          "rotation)."),
    frame: str = typer.Option("export", "--frame", metavar="export|world", help="export (img2mesh's glTF frame) or "
                                                                                "world."),
    views: Optional[Path] = typer.Option(None, "--views", metavar="FOLDER",
                                         help="Views folder (e.g. the GT views): also report colour PSNR there."),
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Chamfer distance and volume IoU against a Google Scanned Objects model (the papers' metric)."""
    import contextlib

    from img2mesh.evaluation.gso import evaluate_files

    stdout = sys.stdout
    if not as_json:
        scores = _guard(verbose, lambda: evaluate_files(prediction, gt, object_name, frame, views))
        psnr = f"  psnr {scores.psnr:.2f}" if scores.psnr is not None else ""
        typer.echo(f"chamfer {scores.chamfer:.5f}  iou {scores.iou:.4f}{psnr}")
        return
    document: dict[str, Any] = {"prediction": str(prediction), "gt": str(gt), "object": object_name}
    try:
        with contextlib.redirect_stdout(sys.stderr):
            scores = evaluate_files(prediction, gt, object_name, frame, views)
    except Img2MeshError as exc:
        _print_json({**document, "ok": False, "exit_code": exc.exit_code, "category": exc.category,
                     "error": str(exc)}, stdout)
        _fail(exc, verbose)
    _print_json({**document, "ok": True, "exit_code": 0, "chamfer": scores.chamfer, "iou": scores.iou,
                 "psnr": scores.psnr}, stdout)


@app.command("config")
def show_config(
    preset: PresetOpt = "default",
    config: ConfigOpt = None,
    set_: SetOpt = [],
    reference: bool = typer.Option(False, "--reference", metavar="", help="Print every key with its default, values, "
                                                                          "presets and meaning as Markdown "
                                                                          "(docs/configuration.md)."),
    verbose: VerboseOpt = False,
) -> None:
    """Print the resolved configuration (defaults, preset, --config, --set) as YAML: every key."""
    import yaml

    from img2mesh.app import config_schema, load_config

    if reference:
        from img2mesh.pipeline.reference import configuration_reference

        typer.echo(configuration_reference(config_schema()), nl=False)
        return
    resolved = _guard(verbose, lambda: load_config(preset, config, list(set_)))
    typer.echo(yaml.safe_dump(resolved.to_dict(), sort_keys=False, default_flow_style=False), nl=False)


@app.command()
def stages() -> None:
    """List the stages in order, with what they read, write and depend on."""
    from img2mesh.app import default_stages
    from img2mesh.console import output_console, stages_table

    output_console().print(stages_table(default_stages()))


@app.command()
def doctor() -> None:
    """Report Python, torch, CUDA/GPUs, optional accelerators and which weights are present."""
    from img2mesh.console import output_console, rows_table
    from img2mesh.doctor import report

    console = output_console()
    for title, rows in report().items():
        console.print(rows_table(title, rows))


@weights_app.command("list")
def weights_list() -> None:
    """Every weight file: what uses it, where it comes from, and whether it is here."""
    from img2mesh.app import weight_registry
    from img2mesh.console import output_console, weights_table
    from img2mesh.utils.weights import environment_summary

    console = output_console()
    console.print(weights_table(weight_registry()))
    console.print(", ".join(f"{k}: {v}" for k, v in environment_summary().items()))


@weights_app.command("download")
def weights_download(
    names: List[str] = typer.Argument(None, metavar="[NAME...]", help="Which weights (default: all; names: "
                                                                      "img2mesh weights list)."),
    verbose: VerboseOpt = False,
) -> None:
    """Fetch weight files into their caches so that later runs work offline."""
    from img2mesh.app import get_weight, weight_registry

    entries = _guard(verbose, lambda: [get_weight(n) for n in names] if names else weight_registry())
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
    name: str = typer.Argument(..., metavar="NAME", help="Which weights, e.g. syncdreamer."),
    verbose: VerboseOpt = False,
) -> None:
    """Print where a weight file is cached (exit 1 when it is not present)."""
    from img2mesh.app import get_weight
    from img2mesh.errors import WeightsError

    def locate() -> Path:
        entry = get_weight(name)
        path = entry.locate()
        if path is None:
            raise WeightsError(f"{name} is not downloaded; run `img2mesh weights download {name}`")
        return path

    typer.echo(str(_guard(verbose, locate)))


HELP_WIDTH_PIPED = "120"  # help piped to a file or a pager: wider than Rich's 80 columns


def main() -> None:
    """Console-script entry point."""
    import os
    import signal

    if not sys.stdout.isatty() and not os.environ.get("TERMINAL_WIDTH") and not os.environ.get("COLUMNS"):
        os.environ["TERMINAL_WIDTH"] = HELP_WIDTH_PIPED  # read by typer's help formatter when it first loads
    signal.signal(signal.SIGTERM, _terminate)
    stdout_was_devnull = _is_devnull(1)
    try:
        app(prog_name="img2mesh")
    except SystemExit as exc:
        # `img2mesh doctor | head -1`: the reader left early, which is not a failure. Rich answers the
        # broken pipe by pointing stdout at /dev/null and exiting 1; that redirection tells it apart
        # from a real exit 1.
        if exc.code == 1 and not stdout_was_devnull and _is_devnull(1):
            sys.exit(0)
        raise


def _is_devnull(fd: int) -> bool:
    """Whether file descriptor ``fd`` is /dev/null."""
    import os

    try:
        here, null = os.fstat(fd), os.stat(os.devnull)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (null.st_dev, null.st_ino)


if __name__ == "__main__":
    sys.exit(main())
