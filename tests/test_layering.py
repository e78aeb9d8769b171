"""The import rule of the package, enforced by reading every module's imports (lazy ones included).

    cli, app, console, doctor  ->  stage packages, report  ->  pipeline framework  ->  utils  ->  errors

* ``img2mesh.cli`` and the application modules (``app``, ``console``, ``doctor``) assemble the rest and
  may import anything;
* a stage package (``segment``, ``elevation``, ``generate``, ``reconstruct``, ``mesh``) and the
  ``evaluation`` library import the framework's contract (``pipeline.contract``, ``pipeline.config``),
  ``utils``, ``errors`` and other packages' library modules, never another package's ``stage``
  module, and never the application modules;
* ``report`` (the HTML pages written after a run) reads what the framework recorded: it imports
  ``pipeline``, ``utils`` and ``errors``, no stage package (it reads their files, not their code);
* ``pipeline`` is the framework: it imports ``utils``, ``errors`` and itself, no stage package;
* ``utils`` imports only ``errors`` and itself.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "img2mesh"
APPLICATION = {"cli", "app", "console", "doctor", "__main__"}
STAGE_PACKAGES = {"segment", "elevation", "generate", "reconstruct", "mesh", "evaluation", "enhance"}
CONTRACT = {"img2mesh.pipeline.contract", "img2mesh.pipeline.config"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ``img2mesh`` module a file imports, at any depth (lazy imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from pkg import module`
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules}


def layer(module: str) -> str:
    """``application``, ``stage:<package>``, ``pipeline``, ``utils`` or ``base`` (errors, the package)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "errors":
        return "base"
    if parts[1] in APPLICATION:
        return "application"
    if parts[1] in STAGE_PACKAGES:
        return f"stage:{parts[1]}"
    return parts[1]


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None when the rule allows it."""
    source, target = layer(importer), layer(imported)
    if target == "base" or source == "application" or source == target:
        return None
    if source == "utils":
        return "utils imports nothing above it"
    if source == "report":
        return None if target in ("pipeline", "utils") else "the report reads the framework's records, no stage's code"
    if source == "pipeline":
        return None if target == "utils" else "the framework imports no stage package or application module"
    if source.startswith("stage:"):
        if target == "utils" or imported in CONTRACT:
            return None
        if target.startswith("stage:"):
            return f"{imported} is another package's stage module" if imported.endswith(".stage") else None
        return f"a stage package imports only the framework's contract ({', '.join(sorted(CONTRACT))})"
    return f"{source} is not a known layer"


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_follows_the_layering():
    problems = [f"{importer} imports {imported}: {why}"
                for importer, imported_set in import_graph().items()
                for imported in sorted(imported_set)
                if (why := violation(importer, imported)) is not None]
    assert not problems, "\n".join(problems)


def test_no_package_level_cycle():
    edges: dict[str, set[str]] = defaultdict(set)
    for importer, imported_set in import_graph().items():
        for imported in imported_set:
            a, b = layer(importer), layer(imported)
            if a != b and "base" not in (a, b):
                edges[a].add(b)
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(edges[node]):
            assert seen.get(nxt) != 1, "package cycle: " + " -> ".join(path + [node, nxt])
            if nxt not in seen:
                visit(nxt, path + [node])
        seen[node] = 2

    for node in sorted(edges):
        if node not in seen:
            visit(node, [])


def test_the_rule_catches_what_it_forbids():
    assert violation("img2mesh.utils.weights", "img2mesh.pipeline.config")
    assert violation("img2mesh.pipeline.runner", "img2mesh.generate.stage")
    assert violation("img2mesh.mesh.stage", "img2mesh.reconstruct.stage")
    assert violation("img2mesh.generate.sampler", "img2mesh.pipeline.runner")
    assert violation("img2mesh.elevation.stage", "img2mesh.console")
    assert violation("img2mesh.mesh.stage", "img2mesh.reconstruct.storage") is None
    assert violation("img2mesh.app", "img2mesh.generate.stage") is None
