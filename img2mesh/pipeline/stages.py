"""The pipeline's stages, in order."""

from __future__ import annotations

from img2mesh.pipeline.stage import Stage


def default_stages() -> list[Stage]:
    """segment -> elevation -> generate -> reconstruct -> mesh (each module imports nothing heavy)."""
    from img2mesh.elevation.stage import STAGE as elevation
    from img2mesh.generate.stage import STAGE as generate
    from img2mesh.mesh.stage import STAGE as mesh
    from img2mesh.reconstruct.stage import STAGE as reconstruct
    from img2mesh.segment.stage import STAGE as segment

    return [segment, elevation, generate, reconstruct, mesh]


def reconstruct_stages() -> list[Stage]:
    """reconstruct -> mesh on a folder of views (``img2mesh reconstruct VIEWS_DIR``)."""
    from img2mesh.mesh.stage import STAGE as mesh
    from img2mesh.reconstruct.stage import FOLDER_STAGE as reconstruct

    return [reconstruct, mesh]
