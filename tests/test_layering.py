"""The import rule of the package, enforced by reading every module's imports (lazy ones, relative
ones, ``importlib.import_module`` and any string naming a module included).

    cli, app, console, doctor  ->  feedback  ->  stage packages, report  ->  pipeline framework  ->  utils  ->  errors

* ``img2mesh.cli`` and the application modules (``app``, ``console``, ``doctor``) assemble the rest and
  may import anything;
* ``feedback`` composes two stages' libraries (generate's sampler, reconstruct's field): it imports
  stage packages' library modules, the contract, ``utils`` and ``errors``, never a ``stage`` module or
  the application; no stage package imports it;
* a stage package (every sub-package that is not the framework or the composition: ``segment``,
  ``elevation``, ``generate``, ``enhance``, ``reconstruct``, ``mesh``, ``refine``) and the libraries at its
  level (``hifi123``, ``neus``, ``evaluation``) import the framework's contract (``pipeline.contract``,
  ``pipeline.config``), ``utils``, ``errors`` and other packages' library modules, never another
  package's ``stage`` module, and never the application modules;
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
COMPOSITION = {"feedback"}
FRAMEWORK = {"pipeline", "utils", "report"}
# Every other sub-package is a stage package (or the evaluation library, which obeys the same rule):
# a new stage needs no line here.
STAGE_PACKAGES = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} - FRAMEWORK - COMPOSITION
CONTRACT = {"img2mesh.pipeline.contract", "img2mesh.pipeline.config"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every dotted name ``source`` (the text of ``module``) imports: plain, relative (resolved against
    the module's package), lazy, and any string constant such as ``importlib.import_module("x.y")``'s
    argument or a list of module names (kept when it names a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("img2mesh."):
            found.add(node.value)
    return found


def imports_of(path: Path) -> set[str]:
    """Every ``img2mesh`` module a file imports, at any depth (see :func:`imports_in`)."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    found = imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    return {name for name in found if name in modules}


def layer(module: str) -> str:
    """``application``, ``stage:<package>``, ``pipeline``, ``utils`` or ``base`` (errors, the package)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "errors":
        return "base"
    if parts[1] in APPLICATION:
        return "application"
    if parts[1] in COMPOSITION:
        return "composition"
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
    if source == "composition":
        if target == "application":
            return "the feedback composition imports no application module"
        if target.startswith("stage:") and imported.endswith(".stage"):
            return f"{imported} is a stage module (the application wires stages)"
        return None
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


def test_refine_and_enhance_share_a_library_and_never_import_each_other():
    """HiFi-123's machinery is its own package; neither stage that uses it reaches into the other."""
    graph = import_graph()
    for importer, imported_set in graph.items():
        if importer.startswith("img2mesh.refine"):
            assert not any(m.startswith("img2mesh.enhance") for m in imported_set), importer
        if importer.startswith("img2mesh.enhance"):
            assert not any(m.startswith("img2mesh.refine") for m in imported_set), importer
    assert any(m.startswith("img2mesh.hifi123") for m in graph["img2mesh.refine.stage"])
    assert any(m.startswith("img2mesh.hifi123") for m in graph["img2mesh.enhance.stage"])


def test_the_rule_catches_what_it_forbids():
    assert violation("img2mesh.utils.weights", "img2mesh.pipeline.config")
    assert violation("img2mesh.pipeline.runner", "img2mesh.generate.stage")
    assert violation("img2mesh.mesh.stage", "img2mesh.reconstruct.stage")
    assert violation("img2mesh.generate.sampler", "img2mesh.pipeline.runner")
    assert violation("img2mesh.elevation.stage", "img2mesh.console")
    assert violation("img2mesh.mesh.stage", "img2mesh.reconstruct.storage") is None
    assert violation("img2mesh.app", "img2mesh.generate.stage") is None
    assert violation("img2mesh.generate.stage", "img2mesh.feedback.operator")  # generation runs below feedback
    assert violation("img2mesh.feedback.operator", "img2mesh.reconstruct.trainer") is None
    assert violation("img2mesh.feedback.operator", "img2mesh.app")


def test_relative_importlib_and_named_imports_are_seen():
    source = ("from .. import errors\nfrom .stage import STAGE\nimport importlib\n"
              "importlib.import_module('img2mesh.mesh.stage')\nMODULES = ('img2mesh.app',)\n")
    found = imports_in(source, "img2mesh.reconstruct.views")
    assert {"img2mesh.errors", "img2mesh.reconstruct.stage", "img2mesh.mesh.stage", "img2mesh.app"} <= found
    assert "img2mesh.reconstruct.stage" in imports_in("from . import stage", "img2mesh.reconstruct", is_package=True)
