"""One command that checks img2mesh on a GPU and ends with one markdown table (``make gpu-check``).

1. the tests marked ``gpu`` (``pytest -m gpu``): reduced precision against float32 on the tiny and
   the full-size model, nerfacc against the PyTorch grid, tinycudann against the PyTorch encoding,
   the rasteriser on GPU against CPU, exact resume of CUDA training;
2. generation with the full-size model and random weights: cfg and harmony guidance, fp16 and
   bf16, 50 DDIM steps: seconds per instance and peak GPU memory;
3. one 3D-feedback operation (``generate.feedback``, full-size model): the first (hull start + fit)
   and a warm-started one, seconds each;
4. the enhance stage's RGNV with a full-size SD-2-depth UNet and VAE (random weights), fp16, l = 30,
   4 views per call: seconds per 16-view set and peak memory;
5. the refine stage's RGSD with the same networks, fp16, 512², T = 20, l = 12: 40 iterations timed,
   seconds per 1000 (the stage's default) extrapolated, and peak memory;
6. reconstruct + mesh at the ``default`` preset on two shared GSO objects: seconds, CD / IoU;
7. one end-to-end ``img2mesh run`` with full-size random weights (``smoke`` preset).

``--quick`` runs the same sequence on the CPU with the tiny model and a handful of steps (the test
suite runs it, so the command cannot rot). Logs and ``results.json`` go to ``--out``.

    python benchmarks/gpu_check.py                 # on a GPU machine (about 10 minutes on an H100)
    python benchmarks/gpu_check.py --quick --out /tmp/check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark modules

QUICK_GENERATE = ["generate.model=tiny", "generate.steps=2"]
QUICK_RECONSTRUCT = ["reconstruct.steps=20", "reconstruct.rays_per_step=128", "reconstruct.samples_per_ray=16",
                     "reconstruct.image_size=32", "reconstruct.hidden=64", "reconstruct.layers=2",
                     "reconstruct.warmup_steps=5", "mesh.resolution=40", "mesh.texture_size=64",
                     "mesh.target_faces=2000"]


@dataclass
class Row:
    check: str
    setting: str
    result: str
    seconds: Optional[float] = None
    peak_gib: Optional[float] = None
    ok: bool = True

    def markdown(self) -> str:
        seconds = "" if self.seconds is None else f"{self.seconds:.1f}"
        peak = "" if self.peak_gib is None else f"{self.peak_gib:.2f}"
        return f"| {self.check} | {self.setting} | {self.result} | {seconds} | {peak} |"


def guarded(rows: list[Row], check: str, setting: str, log: Path, work: Callable[[], list[Row]]) -> None:
    """Run one check; a failure becomes a row (and its traceback goes to the log), the others go on."""
    try:
        rows.extend(work())
    except BaseException as exc:  # noqa: BLE001 - one broken check must not hide the others
        if isinstance(exc, KeyboardInterrupt):
            raise
        with log.open("a") as handle:
            handle.write(f"--- {check} ({setting})\n{traceback.format_exc()}\n")
        rows.append(Row(check, setting, f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
                        ok=False))
    print(rows[-1].markdown(), flush=True)


def gpu_tests(quick: bool, out: Path) -> list[Row]:
    """``pytest -m gpu``; in quick mode only collected (they skip without CUDA)."""
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    if quick:
        command.append("--collect-only")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    (out / "pytest-gpu.log").write_text(done.stdout + done.stderr)
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return [Row("gpu tests", "pytest -m gpu" + (" --collect-only" if quick else ""), summary,
                time.perf_counter() - start, ok=done.returncode == 0)]


def generation(quick: bool) -> list[Row]:
    import torch

    from generate import load, measure
    from img2mesh.generate.precision import Precision

    device = torch.device("cpu" if quick else "cuda")
    size, steps = ("tiny", 2) if quick else ("full", 50)
    rows = []
    for requested in (["fp32"] if quick else ["fp16", "bf16"]):
        precision = Precision.for_run(requested, str(device))
        model = load(size, precision, device)
        for guidance in ("cfg", "harmony"):
            r = measure(model, precision, guidance, steps, device)
            setting = f"{size} model, {guidance}, {r['precision']}, {steps} steps timed"
            result = f"{r['s_per_instance']:.1f} s/instance of 50 steps ({r['s_per_step']:.2f} s/step)"
            rows.append(Row("generate", setting, result + ("" if r["finite"] else ", NOT FINITE"),
                            r["s_per_instance"], r["peak_gib"] if device.type == "cuda" else None, r["finite"]))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def feedback(quick: bool) -> list[Row]:
    import torch

    from generate import load, measure_feedback
    from img2mesh.generate.precision import Precision

    device = torch.device("cpu" if quick else "cuda")
    size, fit_steps, image_size = ("tiny", 10, 16) if quick else ("full", 100, 64)
    precision = Precision.for_run("fp32" if quick else "fp16", str(device))
    r = measure_feedback(load(size, precision, device), device, fit_steps, image_size)
    setting = f"{size} model, {fit_steps} fit steps at {image_size}², one sample set"
    return [Row("feedback", setting, f"first {r['first_s']:.1f} s, warm-started {r['warm_s']:.1f} s", r["warm_s"])]


def enhancement(quick: bool) -> list[Row]:
    import torch

    from enhance import measure

    device = torch.device("cpu" if quick else "cuda")
    r = measure(device, torch.float32 if quick else torch.float16, 4 if quick else 50, 2 if quick else 30,
                2 if quick else 4, tiny=quick)
    setting = f"{'tiny' if quick else 'full-size SD-2-depth'} UNet + VAE, l = {2 if quick else 30}, one set of 16"
    return [Row("enhance", setting, f"{r['set_s']:.1f} s/set (reference once {r['reference_s']:.1f} s; "
                f"{r['s_per_unet_call']:.3f} s per latent and UNet call)", r["set_s"],
                r["peak_gib"] if device.type == "cuda" else None)]


def refinement(quick: bool) -> list[Row]:
    import torch

    from refine_cost import measure

    device = torch.device("cpu" if quick else "cuda")
    iterations = 4 if quick else 40
    r = measure(device, torch.float32 if quick else torch.float16, iterations, tiny=quick)
    setting = (f"{'tiny' if quick else 'full-size SD-2-depth'} UNet + VAE, {r['size']}², T = 20, l = 12, "
               f"{iterations} iterations timed")
    return [Row("refine", setting, f"{r['s_per_iteration']:.2f} s/iteration; 1000 iterations "
                f"{r['s_per_1000'] / 60:.1f} min", r["s_per_1000"], r["peak_gib"] if device.type == "cuda" else None)]


def reconstruction(quick: bool, objects: list[str]) -> list[Row]:
    from reconstruct_gso import GSO, reconstruct_object

    if not (GSO / objects[0] / "model.obj").is_file():
        return [Row("reconstruct + mesh", "GSO oracle views", f"skipped: no shared GSO objects in {GSO}")]
    preset, overrides = ("smoke", QUICK_RECONSTRUCT) if quick else ("default", [])
    rows = []
    for name in objects:
        r = reconstruct_object(name, preset, "mlp", "cpu" if quick else "cuda", overrides)
        rows.append(Row("reconstruct + mesh", f"{name}, {preset}" + (" (shrunk)" if quick else ""),
                        f"CD {r['chamfer']:.4f} / IoU {r['iou']:.3f}", r["seconds"]))
    return rows


def end_to_end(quick: bool, out: Path) -> list[Row]:
    target = out / "e2e"
    command = [sys.executable, "-m", "img2mesh", "run", str(ROOT / "assets" / "chicken.png"), "-o", str(target),
               "--preset", "smoke", "--elevation", "30", "--force", "--set", "generate.random_weights=true",
               "--device", "cpu" if quick else "cuda"]
    for override in (QUICK_GENERATE + QUICK_RECONSTRUCT if quick else []):
        command += ["--set", override]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (out / "e2e.log").write_text(done.stdout + done.stderr)
    made = (target / "mesh.glb").is_file()
    precision = ""
    if (target / "img2mesh.json").is_file():
        stages = json.loads((target / "img2mesh.json").read_text()).get("stages", {})
        precision = f", denoiser {stages.get('generate', {}).get('info', {}).get('precision', '?')}"
    result = f"exit {done.returncode}, mesh.glb {'written' if made else 'MISSING'}{precision}"
    return [Row("end to end", f"img2mesh run, {'tiny' if quick else 'full'} random weights, smoke", result,
                seconds, ok=done.returncode == 0 and made)]


def environment(quick: bool) -> str:
    import torch

    if quick:
        return f"CPU rehearsal (--quick), torch {torch.__version__}"
    return (f"{torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU rehearsal: tiny model, few steps")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "gpu-check")),
                        help="where logs and results.json go (default: $OUT, else gpu-check/)")
    parser.add_argument("--objects", nargs="+", default=None, help="GSO objects (default: chicken teapot)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["tests", "generate", "feedback", "enhance", "refine", "reconstruct", "e2e"])
    args = parser.parse_args()
    import torch

    if not args.quick and not torch.cuda.is_available():
        print("error: no CUDA device is visible; `--quick` rehearses the check on the CPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "gpu-check.log"
    objects = args.objects or (["chicken"] if args.quick else ["chicken", "teapot"])
    started = time.perf_counter()
    rows: list[Row] = []
    print(f"img2mesh GPU check: {environment(args.quick)}", flush=True)
    checks = {
        "tests": ("gpu tests", "pytest -m gpu", lambda: gpu_tests(args.quick, args.out)),
        "generate": ("generate", "full model, random weights", lambda: generation(args.quick)),
        "feedback": ("feedback", "one feedback operation", lambda: feedback(args.quick)),
        "enhance": ("enhance", "RGNV, random weights", lambda: enhancement(args.quick)),
        "refine": ("refine", "RGSD, random weights", lambda: refinement(args.quick)),
        "reconstruct": ("reconstruct + mesh", "GSO", lambda: reconstruction(args.quick, objects)),
        "e2e": ("end to end", "img2mesh run", lambda: end_to_end(args.quick, args.out)),
    }
    for key, (check, setting, work) in checks.items():
        if key not in args.skip:
            guarded(rows, check, setting, log, work)
    total = time.perf_counter() - started
    (args.out / "results.json").write_text(json.dumps(
        {"environment": environment(args.quick), "seconds": total, "rows": [asdict(r) for r in rows]}, indent=2))
    print(f"\n**{environment(args.quick)}** ({total / 60:.1f} min in all)\n")
    print("| check | setting | result | seconds | peak GiB |\n|---|---|---|---|---|")
    print("\n".join(r.markdown() for r in rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
