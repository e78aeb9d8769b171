"""A batch on a Ray cluster: one worker per GPU, inputs handed out as workers free up.

Each worker is a Ray actor holding one :class:`~img2mesh.pipeline.runner.Runner`, so it keeps its
models loaded from one input to the next and runs every input exactly as a local batch does
(fingerprints, resume, per-input lock, manifest). The driver validates the request, checks that every
worker sees the output folder, hands out inputs one at a time (no static split) and collects results.
A worker that dies mid-input (killed, node lost) is replaced and its input goes back to the queue;
the retry resumes from the stages that input already finished. An input that fails by itself is
reported, not retried. Ray is an optional extra, imported only here and only for ``--ray``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from img2mesh.errors import UsageError
from img2mesh.pipeline.contract import SilentReporter, Stage, StageContext
from img2mesh.pipeline.lock import RunLock
from img2mesh.pipeline.runner import Runner, RunResult

log = logging.getLogger("img2mesh")

RAY_MISSING = "--ray needs Ray, an optional extra: pip install 'img2mesh[ray]'"
MAX_ATTEMPTS = 3  # an input whose worker dies is tried on other workers, up to this many times in all
STORAGE_TOKEN = ".img2mesh-ray-check"
WORKER_START_TIMEOUT_S = 600.0  # a worker imports torch and may wait for a free GPU
FORWARDED_ENV = ("HF_HUB_OFFLINE",)  # --offline must hold on every node, not only here
CPUS_PER_CPU_WORKER = 4  # without GPUs: one worker per 4 CPUs (torch's CPU kernels gain little beyond)

StagesFactory = Callable[[], list[Stage]]  # picklable (a module-level function): workers build their own stages


@dataclass(frozen=True)
class ClusterOptions:
    """``--ray ADDRESS`` and ``--workers N``."""

    address: str = "auto"  # auto: the running cluster, else a local one; local; HOST:PORT or ray://...
    workers: Optional[int] = None  # default: one per GPU, else one per CPUS_PER_CPU_WORKER CPUs


@dataclass
class WorkerState:
    """What one worker is doing, for the progress display."""

    name: str
    node: str = ""
    input: Optional[str] = None
    stage: Optional[str] = None
    done: int = 0


@dataclass
class BatchProgress:
    """The batch as the driver sees it, after each event and about once a second."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    retried: int = 0
    workers: list[WorkerState] = field(default_factory=list)

    @property
    def queued(self) -> int:
        return self.total - self.done - self.failed - self.running


Watch = Callable[[BatchProgress], None]


def import_ray() -> Any:
    """The ``ray`` module, or a one-line usage error naming the extra."""
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


def plan_workers(resources: dict[str, float], workers: Optional[int], device: str) -> tuple[int, dict[str, float]]:
    """How many workers to start and what each reserves, from the cluster's resources.

    With GPUs (and a device other than ``cpu``) one worker per GPU, each holding one; otherwise
    workers share the CPUs evenly. ``workers`` caps the count; it cannot exceed what fits, since a
    worker that never gets its resources would stall the batch.
    """
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus and device != "cpu":
        count = min(workers or gpus, gpus)
        return count, {"num_gpus": 1, "num_cpus": max(1, min(2, cpus // count))}
    if device not in ("cpu", "auto"):
        raise UsageError(f"--device {device} with --ray: the cluster has no GPU; use --device cpu or auto")
    count = min(workers or max(1, cpus // CPUS_PER_CPU_WORKER), cpus)
    return count, {"num_cpus": cpus // count}


class BatchWorker:
    """The actor: a runner kept across inputs, and what it is doing now (read by ``status``).

    Ray runs ``status`` and ``check_storage`` on a second thread while ``run`` works
    (``max_concurrency=2``), so the display can follow the stages of a long input.
    """

    def __init__(self, stages_factory: StagesFactory, config: Any, threads: int) -> None:
        import torch

        from img2mesh.utils.device import resolve_device

        torch.set_num_threads(max(1, threads))
        logger = logging.getLogger("img2mesh")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False  # the input's img2mesh.log has it all; Ray's worker log stays quiet
        spec = str(config.run.device)
        # Ray hands each GPU worker one GPU, always visible as cuda:0 inside it.
        device = resolve_device("cuda:0" if spec.startswith("cuda") else spec)
        self._state = {"input": None, "stage": None}
        stages = [self._watched(stage) for stage in stages_factory()]
        self._runner = Runner(stages, config, device, SilentReporter())  # the input's log file only

    def _watched(self, stage: Stage) -> Stage:
        inner = stage.run

        def run(ctx: StageContext) -> Any:
            self._state["stage"] = stage.name
            return inner(ctx)

        return replace(stage, run=run)  # the fingerprint reads name, version and keys, not ``run``

    def describe(self) -> dict[str, Any]:
        """Where the worker runs: node, process and device."""
        return {"node": socket.gethostname(), "pid": os.getpid(), "device": self._runner.device}

    def check_storage(self, path: str, token: str, inputs: Sequence[str]) -> Optional[str]:
        """None when this worker sees ``token`` in ``path`` and every input, else what it misses (and where)."""
        try:
            seen = Path(path).read_text().strip()
        except OSError as exc:
            seen = f"unreadable ({type(exc).__name__})"
        if seen != token:
            return f"on {socket.gethostname()}, {path} is {seen or 'empty'}"
        missing = next((name for name in inputs if not os.path.isfile(name)), None)
        return None if missing is None else f"on {socket.gethostname()}, the input {missing} does not exist"

    def run(self, image: Path, run_dir: Path, options: dict[str, Any]) -> RunResult:
        """One input through the stages, exactly as a local batch runs it."""
        self._state.update(input=image.name, stage=None)
        try:
            return self._runner.run(image, run_dir, more_inputs=True, **options)
        finally:
            self._state.update(input=None, stage=None)

    def status(self) -> dict[str, Optional[str]]:
        """The input and stage in progress (None when idle)."""
        return dict(self._state)


def connect(ray: Any, address: str) -> bool:
    """Join the cluster (or start a local one); True when this call started Ray and must stop it.

    ``auto`` falls back to a local instance only when no cluster was named: with ``RAY_ADDRESS`` set,
    a cluster that does not answer is an error, as for an explicit address.
    """
    if ray.is_initialized():
        return False
    quiet = dict(log_to_driver=False, logging_level=logging.ERROR)
    if address == "auto" and not os.environ.get("RAY_ADDRESS"):
        try:
            ray.init(address="auto", **quiet)
            return True
        except ConnectionError:
            address = "local"  # no running cluster on this machine: start one here
    if address == "local":
        ray.init(include_dashboard=False, **quiet)
        return True
    try:
        ray.init(address=address, **quiet)
    except Exception as exc:  # Ray raises ConnectionError, ValueError or RuntimeError here
        named = os.environ.get("RAY_ADDRESS") if address == "auto" else address
        raise UsageError(f"--ray {address}: cannot join the Ray cluster at {named} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return True


def write_storage_token(out: Path) -> tuple[Path, str]:
    """A random token in ``OUT/``: every worker must read it back before any work."""
    token = secrets.token_hex(16)
    path = out / STORAGE_TOKEN
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(token)
    return path, token


def ask_workers(ray: Any, refs: list[Any]) -> list[Any]:
    """The answers of just-started workers, or one line saying why a worker did not start."""
    try:
        return ray.get(refs, timeout=WORKER_START_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise UsageError(f"the Ray workers did not start within {WORKER_START_TIMEOUT_S:.0f} s "
                         f"(are the GPUs or CPUs they reserve busy? `ray status` shows them)") from None
    except ray.exceptions.RayError as exc:  # e.g. img2mesh or a dependency missing on a node
        cause = getattr(exc, "cause", None) or exc
        first = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
        raise UsageError(f"a Ray worker could not start ({first}); every node needs the same "
                         f"environment with img2mesh installed") from None


def check_shared_storage(ray: Any, workers: Sequence[Any], out: Path, inputs: Sequence[Path]) -> None:
    """Refuse, before any work, when a worker does not see what the driver wrote to ``OUT/``, or an input."""
    path, token = write_storage_token(out)
    names = [str(Path(p).resolve()) for p in inputs]
    try:
        answers = ask_workers(ray, [w.check_storage.remote(str(path.resolve()), token, names) for w in workers])
    finally:
        path.unlink(missing_ok=True)
    problems = [a for a in answers if a is not None]
    if problems:
        raise UsageError(
            f"-o {out} or the inputs are not shared with every Ray worker ({problems[0]}); put OUT and the "
            f"inputs on storage that every node mounts at the same path (NFS, a cluster file system)"
        )


def _failed(image: Path, run_dir: Path, why: str) -> RunResult:
    return RunResult(image, run_dir, error=why, exit_code=1, category="error")


class _Scheduler:
    """Hands inputs to free workers, replaces dead ones, and keeps the progress up to date."""

    def __init__(self, ray: Any, make_worker: Callable[[], Any], count: int, watch: Optional[Watch]) -> None:
        self.ray = ray
        self.make_worker = make_worker
        self.workers = [make_worker() for _ in range(count)]
        self.watch = watch
        self.progress = BatchProgress(total=0, workers=[WorkerState(f"w{i + 1}") for i in range(count)])

    def describe_workers(self) -> None:
        for state, info in zip(self.progress.workers,
                               ask_workers(self.ray, [w.describe.remote() for w in self.workers])):
            state.node = f"{info['node']} {info['device']}"

    def run(self, runs: Sequence[Any], options: dict[str, Any], after_each: Optional[Callable]) -> list[RunResult]:
        """Every input of ``runs`` to the next free worker until all have a result."""
        queue = deque(range(len(runs)))
        attempts = [0] * len(runs)
        results: list[Optional[RunResult]] = [None] * len(runs)
        running: dict[Any, tuple[int, int]] = {}  # object ref -> (worker slot, input index)
        idle = list(range(len(self.workers)))
        self.progress.total = len(runs)
        last_poll = 0.0
        while queue or running:
            while idle and queue:
                slot, index = idle.pop(0), queue.popleft()
                attempts[index] += 1
                running[self.workers[slot].run.remote(runs[index].image, runs[index].run_dir, options)] = (slot, index)
                self.progress.workers[slot].input = runs[index].image.name
            self.progress.running = len(running)
            ready, _ = self.ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in ready:
                slot, index = running.pop(ref)
                result = self._collect(ref, slot, runs[index], attempts[index])
                if result is None:  # the worker died: its input goes back, first in line
                    queue.appendleft(index)
                    self.progress.retried += 1
                else:
                    results[index] = result
                    self._count(slot, result)
                    if after_each is not None:
                        after_each(result)
                idle.append(slot)
            if ready or time.monotonic() - last_poll > 1.0:
                last_poll = time.monotonic()
                self._poll(running)
        return [r for r in results if r is not None]

    def _count(self, slot: int, result: RunResult) -> None:
        worker = self.progress.workers[slot]
        worker.done += 1
        worker.input = worker.stage = None
        if result.ok:
            self.progress.done += 1
        else:
            self.progress.failed += 1

    def _collect(self, ref: Any, slot: int, item: Any, attempt: int) -> Optional[RunResult]:
        """The input's result; None when the worker died and the input may be tried again."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.workers[slot] = self.make_worker()  # a fresh process in its place
            state = self.progress.workers[slot]
            state.node, state.input, state.stage = "(restarted)", None, None
            if attempt < MAX_ATTEMPTS:
                log.warning("%s: its worker died (%s); trying it again on another worker", item.image.name, why)
                return None
            return _failed(item.image, item.run_dir, f"its Ray worker died {attempt} times (last: {why})")
        except ray.exceptions.RayTaskError as exc:  # a bug outside the runner's own error handling
            return _failed(item.image, item.run_dir, f"Ray worker error: {exc.cause!r}")

    def _poll(self, running: dict[Any, tuple[int, int]]) -> None:
        """Each busy worker's current stage (best effort), then the display."""
        if self.watch is None:
            return
        ray = self.ray
        busy = [slot for slot, _ in running.values()]
        refs = [self.workers[slot].status.remote() for slot in busy]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5) if refs else ([], [])
        for slot, ref in zip(busy, refs):
            if ref in ready:
                try:
                    self.progress.workers[slot].stage = ray.get(ref).get("stage")
                except ray.exceptions.RayError:
                    pass  # that worker just died; the scheduler learns it from its run
        self.progress.running = len(running)
        self.watch(self.progress)


def run_on_cluster(config: Any, runs: Sequence[Any], batch: bool, out: Path, stages_factory: StagesFactory,
                   options: dict[str, Any], cluster: ClusterOptions, watch: Optional[Watch] = None,
                   after_each: Optional[Callable[[RunResult], None]] = None,
                   after_batch: Optional[Callable[[Path, list[RunResult]], None]] = None) -> list[RunResult]:
    """Run validated inputs (``runs`` from :func:`~img2mesh.pipeline.batch.resolve`) on Ray workers.

    Results come back in the order of ``runs``; per-input failures are in them, as locally.
    """
    ray = import_ray()
    started = connect(ray, cluster.address)
    workers: list[Any] = []
    try:
        count, reserve = plan_workers(ray.cluster_resources(), cluster.workers, str(config.run.device))
        threads = int(reserve.get("num_cpus", 1))
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        extra = {"runtime_env": {"env_vars": env}} if env else {}
        actor = ray.remote(BatchWorker).options(max_concurrency=2, **reserve, **extra)
        scheduler = _Scheduler(ray, lambda: actor.remote(stages_factory, config, threads), count, watch)
        workers = scheduler.workers  # the same list: a replaced worker is killed at the end too
        # A single input's runner locks OUT/ itself, as locally; a batch's driver holds OUT/'s lock.
        with RunLock(out) if batch else contextlib.nullcontext():
            check_shared_storage(ray, scheduler.workers, out, [item.image for item in runs])
            scheduler.describe_workers()
            log.info("Ray: %d worker(s): %s", count, ", ".join(w.node for w in scheduler.progress.workers))
            results = scheduler.run(runs, options, after_each)
            if batch and after_batch is not None:
                after_batch(out, results)
            return results
    finally:
        # Also on Ctrl-C: killing the workers abandons the stages they run. A stage publishes only
        # when it returns, so nothing half-written reaches the inputs' folders; the next run resumes.
        for worker in workers:
            try:
                ray.kill(worker)
            except Exception:  # already dead
                pass
        if started:
            ray.shutdown()
