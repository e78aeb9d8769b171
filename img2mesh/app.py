"""The application: which stages make img2mesh, the configuration and weights they bring, and running
a request with them.

The CLI parses options and prints results; this module assembles; ``img2mesh.pipeline`` runs
whatever stages it is given and knows none of them. Each stage package brings its own parts on its
``STAGE`` (config section, weight files, report panel), so a new stage is one line of
``STAGE_MODULES``. The schema is built from the stages on first use and is importable as
``img2mesh.app.Config`` (pickling a config, as Ray does, finds it there).
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from img2mesh.pipeline.batch import RunRequest
    from img2mesh.pipeline.cluster import ClusterOptions, Watch
    from img2mesh.pipeline.contract import Reporter, Stage
    from img2mesh.pipeline.runner import RunResult
    from img2mesh.utils.weights import WeightFile

# Each module's STAGE, in run order (the package name is the stage name: stage_names() relies on it).
STAGE_MODULES = (
    "img2mesh.segment.stage",
    "img2mesh.elevation.stage",
    "img2mesh.generate.stage",
    "img2mesh.enhance.stage",
    "img2mesh.reconstruct.stage",
    "img2mesh.mesh.stage",
    "img2mesh.refine.stage",
)


def stage_names() -> list[str]:
    """The stage names in run order, read from ``STAGE_MODULES`` without importing any stage (for --help)."""
    return [name.split(".")[1] for name in STAGE_MODULES]


def registered_stages() -> list["Stage"]:
    """Every stage of ``STAGE_MODULES`` as its package declares it (what the schema and registry read)."""
    return [import_module(name).STAGE for name in STAGE_MODULES]


def default_stages() -> list["Stage"]:
    """The stages of ``img2mesh run``, in order, with the 3D feedback wired into generate
    (``img2mesh.feedback``: it uses reconstruct's field, so generate may not import it)."""
    from img2mesh.feedback import sampling_feedback

    return [dataclasses.replace(stage, run=functools.partial(stage.run, feedback=sampling_feedback))
            if stage.name == "generate" else stage for stage in registered_stages()]


def reconstruct_stages() -> list["Stage"]:
    """reconstruct -> mesh on a folder of views (``img2mesh reconstruct VIEWS_DIR``)."""
    from img2mesh.mesh.stage import FOLDER_STAGE as mesh
    from img2mesh.reconstruct.stage import FOLDER_STAGE as reconstruct

    return [reconstruct, mesh]


@functools.lru_cache(maxsize=1)
def config_schema() -> type:
    """The configuration's schema: the framework's sections, then every stage's (and the library sections
    stages share, before their first user's), in stage order."""
    from img2mesh.pipeline.config import config_class

    sections: dict[str, type] = {}
    for stage in registered_stages():
        for name, section in stage.shared_config:  # a library's section, before its first user's own
            if sections.setdefault(name, section) is not section:
                raise TypeError(f"two stages declare different sections named {name!r}")
        if stage.config is not None:
            sections[stage.name] = stage.config
    return config_class(list(sections.items()), module=__name__, name="Config")


def __getattr__(name: str) -> Any:
    """``img2mesh.app.Config``: the schema, built on first use (PEP 562)."""
    if name == "Config":
        return config_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_config(preset: str = "default", config_file: Optional[Path] = None, overrides: Optional[list[str]] = None,
                values: Optional[dict[str, Any]] = None) -> Any:
    """The resolved configuration (``pipeline.config.load_config`` with img2mesh's schema)."""
    from img2mesh.pipeline.config import load_config as load

    return load(config_schema(), preset, config_file, overrides, values)


def weight_registry(config: Optional[Any] = None) -> list["WeightFile"]:
    """Every weight file a stage declares (the first declaration of a name wins), for ``config``
    (default: the defaults)."""
    config = config if config is not None else config_schema()()
    entries: dict[str, "WeightFile"] = {}
    for stage in registered_stages():
        for entry in stage.weights(config) if stage.weights is not None else ():
            entries.setdefault(entry.name, entry)
    return list(entries.values())


def get_weight(name: str, config: Optional[Any] = None) -> "WeightFile":
    """A registry entry by name, or a UsageError listing the names."""
    from img2mesh.utils.weights import find_weight

    return find_weight(weight_registry(config), name)


def run_images(request: "RunRequest", reporter: Optional["Reporter"] = None,
               cluster: Optional["ClusterOptions"] = None, watch: Optional["Watch"] = None) -> list["RunResult"]:
    """``img2mesh run``: the whole pipeline on every image of the request, each with its HTML
    report, and a batch with its index page; with ``cluster``, on a Ray cluster's workers."""
    from img2mesh.pipeline.batch import run_request, run_request_on_cluster
    from img2mesh.report import refresh_index, refresh_report

    stages = default_stages()
    after_each = functools.partial(refresh_report, stages=stages)
    if cluster is not None:
        return run_request_on_cluster(request, config_schema(), default_stages, cluster, watch, after_each=after_each,
                                      after_batch=refresh_index)
    return run_request(request, config_schema(), stages, reporter, after_each=after_each, after_batch=refresh_index)


def run_views(request: "RunRequest", reporter: Optional["Reporter"] = None) -> "RunResult":
    """``img2mesh reconstruct``: reconstruct and mesh on one folder of views, with the HTML report."""
    from img2mesh.pipeline.batch import run_folder
    from img2mesh.report import refresh_report

    stages = reconstruct_stages()
    return run_folder(request, config_schema(), stages, reporter,
                      after_each=functools.partial(refresh_report, stages=stages))
