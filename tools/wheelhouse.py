"""Download every wheel img2mesh needs into one folder, for machines without internet (``make wheelhouse``).

    python tools/wheelhouse.py                                  # this machine's Python and platform
    python tools/wheelhouse.py --python-version 3.12 --platform manylinux_2_28_x86_64
    python tools/wheelhouse.py --with-torch                     # torch and torchvision too (GBs)
    python tools/wheelhouse.py --only diffusers trimesh         # just these (at the versions installed
                                                                # here), without dependencies

Then, on the offline machine (which has a CUDA build of torch already):

    pip install --no-index --find-links wheelhouse img2mesh

How: img2mesh is built into a wheel; its dependency tree is read, transitively, from the metadata
of what is installed here (markers evaluated for the target), and each package is downloaded at the
version installed here as a wheel for the target Python and platform (``pip download --no-deps``).
A dependency published only as a source archive (carvekit's ``typing`` backport) is built into a
pure-Python wheel here. Run it from img2mesh's environment (``make wheelhouse`` does). torch,
torchvision and the CUDA runtime packages they pull in (``nvidia-*``, ``triton``, ``cuda-*``) are
left out unless ``--with-torch``: GPU machines have a CUDA build of torch matched to their driver,
and those wheels weigh several GB.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXCLUDED = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")


def pip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=check)


def compatible_platforms(platform: str) -> list[str]:
    """``platform`` and the older tags a machine with it also runs (pip does not expand them itself)."""
    match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if match is None:
        return [platform]
    newest, arch = int(match.group(1)), match.group(2)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(newest, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{name}_{arch}" for minor, name in legacy.items() if minor <= newest]


def target_options(python_version: str, platform: str) -> list[str]:
    options = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for tag in compatible_platforms(platform):
        options += ["--platform", tag]
    return options


def build_img2mesh(out: Path) -> Path:
    pip("wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT))
    return max(out.glob("img2mesh-*.whl"), key=lambda p: p.stat().st_mtime)


def marker_environment(python_version: str, platform: str) -> dict[str, str]:
    """The values environment markers (``; python_version < "3.11"``, ``sys_platform == "win32"``) see on the target."""
    system = ("win32", "Windows") if platform.startswith("win") else \
        ("darwin", "Darwin") if platform.startswith("macosx") else ("linux", "Linux")
    machine = {"win_amd64": "AMD64", "win32": "x86"}.get(platform, platform.rsplit("_", 1)[-1]
                                                             if not platform.endswith("x86_64") else "x86_64")
    return {"python_version": python_version, "python_full_version": f"{python_version}.0",
            "sys_platform": system[0], "platform_system": system[1], "platform_machine": machine,
            "os_name": "nt" if system[0] == "win32" else "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython"}


def requirement_tree(python_version: str, platform: str, with_torch: bool) -> tuple[dict[str, str], set[str]]:
    """img2mesh's dependencies, transitively, at the versions installed here: ({name: version}, left out).

    Read from the installed distributions' metadata with the target's markers, so nothing is
    resolved against an index (which would fetch torch's multi-GB wheel just to read its metadata).
    Excluded packages are not descended into: their own dependencies come with them on the target.
    """
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    environment = marker_environment(python_version, platform)
    found: dict[str, str] = {}
    left_out: set[str] = set()
    pending: list[tuple[str, set[str]]] = [("img2mesh", set())]
    while pending:
        name, extras = pending.pop()
        for text in metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({**environment, "extra": e}) for e in extras | {""}):
                continue
            key = canonicalize_name(requirement.name)
            if EXCLUDED.match(key) and not with_torch:
                left_out.add(key)
            elif key not in found:
                found[key] = metadata.version(requirement.name)
                pending.append((requirement.name, set(requirement.extras)))
    return found, left_out


def pinned(requirement: str) -> str:
    """``name`` -> ``name==version`` at the version installed here (a requirement with a version stays)."""
    from importlib import metadata

    if re.search(r"[=<>~!]", requirement):
        return requirement
    try:
        return f"{requirement}=={metadata.version(requirement)}"
    except metadata.PackageNotFoundError:
        return requirement


def fetch(requirement: str, out: Path, target: list[str]) -> None:
    """Download the wheel for the target; a pure-Python package published only as source is built here."""
    if pip("download", "--no-deps", "--quiet", "-d", str(out), *target, requirement, check=False).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as scratch:
        built = pip("wheel", "--no-deps", "--quiet", "-w", scratch, requirement, check=False)
        wheels = list(Path(scratch).glob("*-py3-none-any.whl")) + list(Path(scratch).glob("*-py2.py3-none-any.whl"))
        if built.returncode != 0 or not wheels:
            raise SystemExit(f"{requirement} has no wheel for this Python and platform, and is not pure Python")
        print(f"  {requirement}: no wheel on the index, built one from its source archive")
        wheels[0].replace(out / wheels[0].name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    parser.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    parser.add_argument("--platform", default=None,
                        help="pip platform tag (default: this machine's, e.g. manylinux_2_28_x86_64, win_amd64, "
                             "macosx_11_0_arm64)")
    parser.add_argument("--with-torch", action="store_true", help="also torch, torchvision and their CUDA wheels")
    parser.add_argument("--only", nargs="+", help="download just these requirements, without their dependencies")
    args = parser.parse_args()
    platform = args.platform or sysconfig.get_platform().replace("-", "_").replace(".", "_")
    if platform == "linux_x86_64":
        platform = "manylinux_2_28_x86_64"  # what PyPI's Linux wheels are tagged with
    target = target_options(args.python_version, platform)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"wheelhouse for CPython {args.python_version} on {platform} in {args.out}")
    left_out: set[str] = set()
    if args.only:
        requirements = [pinned(requirement) for requirement in args.only]
    else:
        build_img2mesh(args.out)
        tree, left_out = requirement_tree(args.python_version, platform, args.with_torch)
        requirements = [f"{name}=={version}" for name, version in sorted(tree.items())]
    for requirement in requirements:
        fetch(requirement, args.out, target)
    wheels = sorted(args.out.glob("*.whl"))
    size = sum(p.stat().st_size for p in wheels) / 2**20
    print(f"{len(wheels)} wheels, {size:.0f} MiB in {args.out}")
    if left_out:
        print(f"left out (the target needs its own CUDA build of torch): {', '.join(sorted(left_out))}")


if __name__ == "__main__":
    main()
