"""The application: which stages make img2mesh's two pipelines, and running a request with them.

The CLI parses options and prints results; this module assembles; ``img2mesh.pipeline`` runs
whatever stages it is given and knows none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from img2mesh.pipeline.batch import RunRequest
    from img2mesh.pipeline.cluster import ClusterOptions, Watch
    from img2mesh.pipeline.contract import Reporter, Stage
    from img2mesh.pipeline.runner import RunResult


def default_stages() -> list["Stage"]:
    """segment -> elevation -> generate -> enhance -> reconstruct -> mesh (each module imports nothing heavy)."""
    from img2mesh.elevation.stage import STAGE as elevation
    from img2mesh.enhance.stage import STAGE as enhance
    from img2mesh.generate.stage import STAGE as generate
    from img2mesh.mesh.stage import STAGE as mesh
    from img2mesh.reconstruct.stage import STAGE as reconstruct
    from img2mesh.segment.stage import STAGE as segment

    return [segment, elevation, generate, enhance, reconstruct, mesh]


def reconstruct_stages() -> list["Stage"]:
    """reconstruct -> mesh on a folder of views (``img2mesh reconstruct VIEWS_DIR``)."""
    from img2mesh.mesh.stage import STAGE as mesh
    from img2mesh.reconstruct.stage import FOLDER_STAGE as reconstruct

    return [reconstruct, mesh]


def run_images(request: "RunRequest", reporter: Optional["Reporter"] = None,
               cluster: Optional["ClusterOptions"] = None, watch: Optional["Watch"] = None) -> list["RunResult"]:
    """``img2mesh run``: the whole pipeline on every image of the request, each with its HTML
    report, and a batch with its index page; with ``cluster``, on a Ray cluster's workers."""
    from img2mesh.pipeline.batch import run_request, run_request_on_cluster
    from img2mesh.report import refresh_index, refresh_report

    if cluster is not None:
        return run_request_on_cluster(request, default_stages, cluster, watch, after_each=refresh_report,
                                      after_batch=refresh_index)
    return run_request(request, default_stages(), reporter, after_each=refresh_report, after_batch=refresh_index)


def run_views(request: "RunRequest", reporter: Optional["Reporter"] = None) -> "RunResult":
    """``img2mesh reconstruct``: reconstruct and mesh on one folder of views, with the HTML report."""
    from img2mesh.pipeline.batch import run_folder
    from img2mesh.report import refresh_report

    return run_folder(request, reconstruct_stages(), reporter, after_each=refresh_report)
