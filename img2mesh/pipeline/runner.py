"""The stage runner: fingerprints, resume, atomic stage folders, publishing, the run manifest.

For each input the runner walks the stages in order. A stage whose recorded fingerprint matches
(input digest + its config keys + the fingerprints of the stages it reads) and whose outputs are
intact is skipped; otherwise it runs in a staging folder ``OUT/.partial/<stage>/`` that replaces
``OUT/<stage>/`` only once the stage has returned and its declared outputs exist.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from img2mesh import __version__
from img2mesh.errors import Img2MeshError, InputError, OccupiedError, StageError, UsageError
from img2mesh.pipeline.config import Config
from img2mesh.pipeline.contract import Reporter, SilentReporter, Stage, StageContext
from img2mesh.pipeline.lock import RunLock
from img2mesh.pipeline.manifest import Manifest, file_record, now_iso, read_only_manifest
from img2mesh.pipeline.models import ModelCache
from img2mesh.utils.files import atomic_copy, path_size, sha256_file, sha256_json, sha256_path

log = logging.getLogger("img2mesh")
PARTIAL_DIR = ".partial"
FINGERPRINT_FILE = ".fingerprint"


@dataclass
class StageOutcome:
    """What happened to one stage in this command."""

    stage: str
    status: str  # done | skipped | failed | interrupted | not run | kept | off
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    error: Optional[str] = None


@dataclass
class RunResult:
    """What happened to one input."""

    image: Path
    run_dir: Path
    outcomes: list[StageOutcome] = field(default_factory=list)
    error: Optional[str] = None
    exit_code: int = 0
    category: Optional[str] = None  # the failure's kind (Img2MeshError.category); None when it succeeded
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def main_output(self) -> Optional[str]:
        """The last file published by the last stage that wrote something."""
        for outcome in reversed(self.outcomes):
            if outcome.outputs:
                return outcome.outputs[0]
        return None


def stage_fingerprint(stage: Stage, input_sha: str, config: Config, upstream: dict[str, str]) -> str:
    """Digest of everything a stage's result depends on.

    ``upstream`` maps each stage already visited to the digest of its fingerprint and outputs; a stage the
    config switches off depends on nothing upstream (it makes nothing from it).
    """
    off = stage.enabled is not None and not stage.enabled(config)
    return sha256_json({
        "stage": stage.name,
        "version": stage.version,
        "input": input_sha,
        "config": (stage.config_values(config) if stage.config_values is not None
                   else {key: config.get(key) for key in stage.config_keys}),
        "upstream": {} if off else {name: upstream[name] for name in stage.reads},
    })


RANDOM_WEIGHTS_KEY = "random_weights"  # the convention: a section's untrained stand-in for its networks


def check_owner(image: Path, run_dir: Path, input_sha: Optional[str] = None) -> None:
    """Refuse an output folder that holds another input's results (``--force`` replaces them)."""
    previous = (read_only_manifest(run_dir) or {}).get("input")
    if not isinstance(previous, dict) or previous.get("sha256") is None:
        return
    if previous["sha256"] != (input_sha or sha256_path(image)):
        raise OccupiedError(f"{run_dir} holds the results of another input ({previous.get('path')}); use another -o, "
                            f"or --force to replace them")


def untrained_sections(stages: Sequence[Stage], config: Config) -> list[str]:
    """The config sections whose ``random_weights`` is on and that a stage switched on depends on (in
    its ``config_keys``): with any, the run's result is noise, whatever it looks like."""
    found: list[str] = []
    for stage in stages:
        if stage.enabled is not None and not stage.enabled(config):
            continue
        for key in stage.config_keys:
            section = key.split(".")[0]
            if key not in (section, f"{section}.{RANDOM_WEIGHTS_KEY}") or section in found:
                continue
            try:
                on = config.get(f"{section}.{RANDOM_WEIGHTS_KEY}") is True
            except AttributeError:
                on = False
            if on:
                found.append(section)
    return found


def stage_range(stages: Sequence[Stage], from_stage: Optional[str], until_stage: Optional[str]) -> tuple[int, int]:
    """Indices of the first and last stage to run; unknown names are usage errors."""
    names = [s.name for s in stages]
    for option, value in (("--from", from_stage), ("--until", until_stage)):
        if value is not None and value not in names:
            raise UsageError(f"{option} {value}: unknown stage; stages are {', '.join(names)}")
    start = names.index(from_stage) if from_stage else 0
    end = names.index(until_stage) if until_stage else len(names) - 1
    if start > end:
        raise UsageError(f"--from {from_stage} comes after --until {until_stage}")
    return start, end


class WarningRecorder(logging.Handler):
    """Inside its block, keeps the messages of the warnings logged to ``img2mesh`` (for the manifest,
    from which the report shows them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)

    def __enter__(self) -> "WarningRecorder":
        log.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        log.removeHandler(self)


class Runner:
    """Runs a sequence of stages on inputs with one resolved config and device.

    The runner owns the models the stages load (``self.models``): after each stage it moves off
    the GPU every model that no later stage of the input uses, parking it on the CPU when more
    inputs follow (``run(..., more_inputs=True)``) and dropping it otherwise. ``close()`` drops all.
    """

    def __init__(self, stages: Sequence[Stage], config: Config, device: str,
                 reporter: Optional[Reporter] = None) -> None:
        self.stages = list(stages)
        self.config = config
        self.reporter: Reporter = reporter if reporter is not None else SilentReporter()
        self.device = device
        self.models = ModelCache()
        self._park = False  # this input's `more_inputs`

    def close(self) -> None:
        """Release every model the stages loaded."""
        self.models.close()

    def run(
        self,
        image: Path,
        run_dir: Path,
        *,
        from_stage: Optional[str] = None,
        until_stage: Optional[str] = None,
        force: bool = False,
        lock: bool = True,
        more_inputs: bool = False,
    ) -> RunResult:
        """Run (or resume) the pipeline on one input; errors are caught into the result.

        ``more_inputs``: other inputs follow in this process, so models are parked, not dropped.
        """
        start_time = time.perf_counter()
        result = RunResult(image, run_dir)
        self._park = more_inputs
        try:
            start, end = stage_range(self.stages, from_stage, until_stage)
            for stage in self.stages:
                if stage.check_input is not None:
                    stage.check_input(image, self.config)
            if from_stage is not None:
                self._check_from(image, run_dir, start, from_stage)
            if not force:  # before the lock and the log: a refused folder is left exactly as it was
                check_owner(image, run_dir)
            if lock:
                with RunLock(run_dir):
                    self._run_locked(image, run_dir, start, end, from_stage, force, result)
            else:
                self._run_locked(image, run_dir, start, end, from_stage, force, result)
        except Img2MeshError as exc:
            result.error = str(exc)
            result.exit_code = exc.exit_code
            result.category = exc.category
            log.error("%s: %s", image.name, exc, extra={"file_only": True})
            log.debug("details", exc_info=True, extra={"file_only": not self.reporter.verbose})
        finally:
            self.models.release(keep=(), park=more_inputs)
        result.seconds = time.perf_counter() - start_time
        return result

    def _check_from(self, image: Path, run_dir: Path, start: int, from_stage: str) -> None:
        """``--from STAGE`` needs an up-to-date result of every stage before it: checked from the manifest
        alone, before the run folder, its log or its lock are created."""
        manifest = Manifest(run_dir, read_only_manifest(run_dir))
        input_sha = sha256_path(image)
        handed_down: dict[str, str] = {}
        for stage in self.stages[:start]:
            fp = stage_fingerprint(stage, input_sha, self.config, handed_down)
            record = manifest.stage(stage.name)
            off = stage.enabled is not None and not stage.enabled(self.config)
            current = record.get("fingerprint") == fp and (
                record.get("status") == "off" if off else
                record.get("status") == "done" and manifest.outputs_intact(stage.name, run_dir / stage.name))
            if not current:
                raise InputError(f"cannot start from {from_stage}: stage {stage.name} has no up-to-date result in "
                                 f"{run_dir}; run without --from first")
            handed_down[stage.name] = sha256_json([record.get("fingerprint"), record.get("outputs")])

    def _models_needed_after(self, index: int, end: int) -> set[str]:
        return {name for stage in self.stages[index + 1:end + 1] for name in stage.models}

    def _run_locked(self, image: Path, run_dir: Path, start: int, end: int,
                    from_stage: Optional[str], force: bool, result: RunResult) -> None:
        with self.reporter.log_file(run_dir / "img2mesh.log"):
            log.info("img2mesh %s: %s -> %s (device %s)", __version__, image, run_dir, self.device)
            manifest = Manifest.load(run_dir)
            input_sha = sha256_path(image)
            if not force:  # again under the lock: another process may have written it since
                check_owner(image, run_dir, input_sha)
            untrained = untrained_sections(self.stages, self.config)
            manifest.data.update({
                "img2mesh_version": __version__,
                "input": {"path": str(image.resolve()), "size": path_size(image), "sha256": input_sha},
                "config": self.config.to_dict(),
                "device": self.device,
                "random_weights": untrained,
            })
            manifest.save()
            if untrained:
                log.warning("random weights (%s): untrained networks stand in for the models, so the mesh is noise, "
                            "not a reconstruction of the photo (for demonstrations and tests)", ", ".join(untrained))
            # What each finished stage hands downstream: its fingerprint and the digests of what
            # it wrote, so a stage whose outputs changed (a non-deterministic re-run) invalidates
            # its readers even when its own config did not change.
            handed_down: dict[str, str] = {}
            for index, stage in enumerate(self.stages):
                fp = stage_fingerprint(stage, input_sha, self.config, handed_down)
                try:
                    outcome = self._visit(stage, index, fp, start, end, from_stage, force, image,
                                          run_dir, manifest)
                except Img2MeshError as exc:
                    result.outcomes.append(StageOutcome(stage.name, "failed", error=str(exc)))
                    raise
                except KeyboardInterrupt:
                    result.outcomes.append(StageOutcome(stage.name, "interrupted"))
                    raise
                result.outcomes.append(outcome)
                self.models.release(keep=self._models_needed_after(index, end), park=self._park)
                record = manifest.stage(stage.name)
                handed_down[stage.name] = sha256_json([record.get("fingerprint"), record.get("outputs")])

    def _visit(self, stage: Stage, index: int, fp: str, start: int, end: int, from_stage: Optional[str],
               force: bool, image: Path, run_dir: Path, manifest: Manifest) -> StageOutcome:
        name = stage.name
        if stage.enabled is not None and not stage.enabled(self.config):
            if start <= index <= end:
                self._switch_off(stage, fp, run_dir, manifest)
            return StageOutcome(name, "off")
        record = manifest.stage(name)
        current = (record.get("status") == "done" and record.get("fingerprint") == fp
                   and manifest.outputs_intact(name, run_dir / name))
        if index < start:
            if not current:
                raise InputError(
                    f"cannot start from {from_stage}: stage {name} has no up-to-date result in {run_dir}; "
                    f"run without --from first"
                )
            return StageOutcome(name, "kept", outputs=record.get("published", []))
        if index > end:
            if record.get("status") == "done" and not current:
                manifest.update_stage(name, status="stale")
                log.warning("%s: its outputs are out of date (run without --until to refresh them)", name)
            return StageOutcome(name, "not run")
        if current and not force and from_stage is None:
            log.info("%s: up to date, skipped", name)
            published = self._publish(stage, run_dir, manifest)
            return StageOutcome(name, "skipped", outputs=published)
        return self._execute(stage, fp, force or from_stage is not None, image, run_dir, manifest)

    def _execute(self, stage: Stage, fp: str, fresh: bool, image: Path, run_dir: Path,
                 manifest: Manifest) -> StageOutcome:
        name = stage.name
        partial = run_dir / PARTIAL_DIR / name
        marker = partial / FINGERPRINT_FILE
        resumed = (not fresh and marker.is_file() and marker.read_text().strip() == fp)
        if partial.exists() and not resumed:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        marker.write_text(fp)
        started = now_iso()
        # Remember what the previous result published, so files it no longer makes are removed.
        published_before = manifest.stage(name).get("published", [])
        manifest.set_stage(name, status="running", fingerprint=fp, started=started, published=published_before)
        log.info("%s: running%s", name, " (resuming an interrupted attempt)" if resumed else "")
        ctx = StageContext(
            stage=name, input_path=image, run_dir=run_dir, out_dir=partial, config=self.config,
            device=self.device, upstream={r: run_dir / r for r in stage.reads}, resumed=resumed,
            log=log, progress=self.reporter.progress, models=self.models,
        )
        t0 = time.perf_counter()
        warnings = WarningRecorder()
        try:
            with warnings:
                info = stage.run(ctx) or {}
            missing = [pattern for pattern in stage.outputs if not any(partial.glob(pattern))]
            if missing:
                raise StageError(f"stage {name} finished without writing {', '.join(missing)}")
        except KeyboardInterrupt:
            manifest.update_stage(name, status="interrupted", ended=now_iso())
            raise
        except Img2MeshError as exc:
            manifest.update_stage(name, status="failed", ended=now_iso(), error=str(exc))
            self._drop_if_empty(partial)
            raise
        except Exception as exc:
            message = f"stage {name} failed: {type(exc).__name__}: {exc}"
            manifest.update_stage(name, status="failed", ended=now_iso(), error=message)
            self._drop_if_empty(partial)
            raise StageError(message) from exc
        seconds = time.perf_counter() - t0
        marker.unlink()
        outputs = {p.relative_to(partial).as_posix(): file_record(p)
                   for p in sorted(partial.rglob("*")) if p.is_file()}
        self._swap_in(partial, run_dir / name)
        manifest.set_stage(name, status="done", fingerprint=fp, started=started, ended=now_iso(),
                           seconds=round(seconds, 3), outputs=outputs, info={**ctx.info, **info},
                           published=published_before, warnings=warnings.messages)
        published = self._publish(stage, run_dir, manifest)
        log.info("%s: done in %.1f s", name, seconds)
        return StageOutcome(name, "done", seconds, outputs=published)

    def _switch_off(self, stage: Stage, fp: str, run_dir: Path, manifest: Manifest) -> None:
        """Record a stage the config switches off; what an earlier run of it left goes."""
        if manifest.stage(stage.name).get("status") == "off" and manifest.stage(stage.name).get("fingerprint") == fp:
            return
        shutil.rmtree(run_dir / stage.name, ignore_errors=True)
        shutil.rmtree(run_dir / PARTIAL_DIR / stage.name, ignore_errors=True)
        manifest.set_stage(stage.name, status="off", fingerprint=fp, ended=now_iso(), outputs={},
                           published=manifest.stage(stage.name).get("published", []))
        self._publish(stage, run_dir, manifest)
        log.info("%s: off", stage.name)

    @staticmethod
    def _drop_if_empty(partial: Path) -> None:
        """After a failure, the staging folder goes when it holds nothing a retry could resume from (only
        its fingerprint: e.g. generate stopped for want of weights); a checkpoint keeps it."""
        if any(p.name != FINGERPRINT_FILE for p in partial.iterdir()):
            return
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.parent.rmdir()  # OUT/.partial, once nothing else is pending in it
        except OSError:
            pass

    @staticmethod
    def _swap_in(partial: Path, final: Path) -> None:
        """Replace ``final`` by ``partial`` so that no moment exposes a mix of the two."""
        old = partial.with_name(partial.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        partial.rename(final)
        if old.exists():
            shutil.rmtree(old)
        try:
            partial.parent.rmdir()  # OUT/.partial, once nothing else is pending in it
        except OSError:
            pass

    @staticmethod
    def _publish(stage: Stage, run_dir: Path, manifest: Manifest) -> list[str]:
        """Copy the stage's final artifacts to the run folder, keeping their sub-folders."""
        stage_dir = run_dir / stage.name
        published = []
        for pattern in stage.publish:
            for path in sorted(stage_dir.glob(pattern)):
                name = path.relative_to(stage_dir).as_posix()
                target = run_dir / name
                if not target.exists() or target.stat().st_size != path.stat().st_size or \
                        sha256_file(target) != sha256_file(path):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    atomic_copy(path, target)
                published.append(name)
        before = manifest.stage(stage.name).get("published", [])
        # A later stage may publish under the same name (refine's mesh.glb over mesh's): not ours to remove.
        claimed = {n for other, record in manifest.stages.items() if other != stage.name
                   for n in record.get("published", []) or []}
        for name in before:
            if name not in published and name not in claimed:
                stale = run_dir / name
                stale.unlink(missing_ok=True)  # e.g. a format no longer requested
                if stale.parent != run_dir and stale.parent.is_dir() and not any(stale.parent.iterdir()):
                    stale.parent.rmdir()
        manifest.update_stage(stage.name, published=published)
        return published
