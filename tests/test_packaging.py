"""What img2mesh declares: every library it imports is a dependency (or in an extra such as
``img2mesh[ray]``); the presets ship as package data."""

from __future__ import annotations

import ast
import importlib.metadata
import sys

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.data import ROOT

OPTIONAL = {"tinycudann": "a GPU accelerator built from source (README: Install)"}


def imported_libraries() -> dict[str, str]:
    """Top-level third-party modules imported anywhere in the package (lazy imports included) -> a file."""
    found = {}
    for path in (ROOT / "img2mesh").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                if top != "img2mesh" and top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_library_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for name, rs in project["optional-dependencies"].items() if name != "dev" for r in rs]
    declared = {canonicalize_name(Requirement(r).name) for r in [*project["dependencies"], *extras]}
    owners = importlib.metadata.packages_distributions()
    undeclared = []
    for module, where in sorted(imported_libraries().items()):
        if module in OPTIONAL:
            continue
        distributions = {canonicalize_name(d) for d in owners.get(module, [module])}  # else: same name
        if not distributions & declared:
            undeclared.append(f"{module} (distribution {sorted(distributions) or '?'}, imported in {where})")
    assert not undeclared, "imported but not declared in pyproject.toml: " + "; ".join(undeclared)
    assert "cv2" in imported_libraries() and {"torch", "diffusers", "carvekit"} <= set(imported_libraries())


def test_presets_are_real_files_in_the_package():
    folder = ROOT / "img2mesh" / "configs"
    assert not folder.is_symlink() and {p.name for p in folder.glob("*.yaml")} == {"smoke.yaml", "fast.yaml",
                                                                                 "quality.yaml", "demo.yaml"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "configs/*.yaml" in project["img2mesh"]
