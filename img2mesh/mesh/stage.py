"""The mesh stage: marching cubes of the trained field, clean-up, decimation, texture, export, previews."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from img2mesh.mesh.config import MeshConfig
from img2mesh.mesh.report import panel
from img2mesh.pipeline.contract import Stage, StageContext

FRAME = "glTF: +Y up, input view along +Z; (X,Y,Z) = world (y,z,x)"


def make_mesh(ctx: StageContext, field_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Mesh the field saved in ``field_dir`` into ``out_dir``; facts for the manifest."""
    import torch

    from img2mesh.errors import StageError
    from img2mesh.mesh.export import export_mesh
    from img2mesh.mesh.extract import keep_components, marching_cubes, sdf_grid, surface_colors, vertex_colors
    from img2mesh.mesh.preview import write_previews
    from img2mesh.reconstruct.storage import load_field

    cfg = ctx.config.mesh
    device = torch.device(ctx.device)
    field = load_field(field_dir, ctx.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ctx.progress("marching cubes", total=1) as task:
        values = sdf_grid(field, cfg.resolution, ctx.config.scene.bound, device)
        task.advance()
    try:
        mesh = marching_cubes(values, ctx.config.scene.bound)
    except ValueError as exc:
        raise StageError(f"mesh: {exc} (the reconstruction failed; try more reconstruct.steps)") from None
    raw_faces = len(mesh.faces)
    mesh, kept, dropped = keep_components(mesh, cfg.min_component)
    watertight_before = bool(mesh.is_watertight)
    quad_written, quad_info = [], {}
    if cfg.remesh == "quad":  # from the surface before decimation: the most detail to follow
        quad_written, quad_info = make_quad_mesh(ctx, mesh, lambda points: surface_colors(field, points, device),
                                                 out_dir)
    if cfg.target_faces and len(mesh.faces) > cfg.target_faces:
        mesh = mesh.simplify_quadric_decimation(face_count=cfg.target_faces)
    mesh.visual.vertex_colors = vertex_colors(field, mesh.vertices, device)
    info: dict[str, Any] = {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
                            "faces_before_cleanup": raw_faces, "components": kept, "components_dropped": dropped,
                            "watertight": bool(mesh.is_watertight),
                            "watertight_before_decimation": watertight_before}
    textured = None
    if cfg.texture and {"glb", "obj"} & set(cfg.formats):
        from img2mesh.mesh.texture import texture_mesh

        with ctx.progress(f"texture {cfg.texture_size}²", total=1) as task:
            textured, facts = texture_mesh(mesh, cfg.texture_size,
                                           lambda points: surface_colors(field, points, device), device)
            task.advance()
        info.update(facts)
    info.update(quad_info)
    written = export_mesh(mesh, out_dir, cfg.formats, textured) + quad_written
    if cfg.preview:
        with ctx.progress("previews", total=1) as task:
            written += write_previews(textured if textured is not None else mesh, out_dir)
            task.advance()
    return {**info, "files": [p.name for p in written], "frame": FRAME}


def make_quad_mesh(ctx: StageContext, mesh: Any, color_fn: Any, out_dir: Path) -> tuple[list[Path], dict[str, Any]]:
    """``mesh_quad.obj`` (quads, in the export frame) with its own texture when texturing is on."""
    import time

    import numpy as np

    from img2mesh.mesh.export import WORLD_TO_EXPORT
    from img2mesh.mesh.remesh import bake_quads, quad_atlas, quad_remesh, write_quad_obj

    cfg = ctx.config.mesh
    budget = cfg.target_faces or max(len(mesh.faces) // 2, 8)
    start = time.perf_counter()
    with ctx.progress(f"quad remesh (~{budget} quads)", total=1) as task:
        quads = quad_remesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), budget)
        task.advance()
    info: dict[str, Any] = {"quad_faces": int(len(quads.quads)), "quad_vertices": int(len(quads.vertices))}
    atlas = texture = None
    if cfg.texture:
        atlas = quad_atlas(len(quads.quads), cfg.texture_size)
        with ctx.progress(f"quad texture {atlas.size}²", total=1) as task:
            texture = bake_quads(quads, atlas, color_fn)
            task.advance()
        info["quad_texture_size"] = atlas.size
    exported = type(quads)(quads.vertices @ WORLD_TO_EXPORT.T, quads.quads)
    written = write_quad_obj(exported, out_dir / "mesh_quad.obj", atlas, texture)
    info["quad_seconds"] = round(time.perf_counter() - start, 2)
    return written, info


def run(ctx: StageContext) -> dict[str, Any]:
    from img2mesh.reconstruct.storage import sample_folders

    reconstructed = ctx.stage_dir("reconstruct")
    folders = sample_folders(reconstructed)
    if folders == [reconstructed]:
        return make_mesh(ctx, reconstructed, ctx.out_dir)
    per_sample = {}
    for folder in folders:
        ctx.log.info("mesh: %s", folder.name)
        per_sample[folder.name] = make_mesh(ctx, folder, ctx.out_dir / folder.name)
    return {"per_sample": per_sample, "frame": FRAME}


def check_config(config: Any) -> None:
    """``--remesh quad`` needs its optional package: say so before any stage runs, not after hours."""
    if config.mesh.remesh == "quad":
        from img2mesh.mesh.remesh import check_quad_remesher

        check_quad_remesher()


_FILES = ("mesh.glb", "mesh.ply", "mesh.obj", "mesh.mtl", "mesh_albedo.png", "preview.png", "turntable.mp4",
          "turntable.gif", "mesh_quad.obj", "mesh_quad.mtl", "mesh_quad_albedo.png")
STAGE = Stage(
    name="mesh",
    description="marching cubes, components, decimation, UV texture, export and previews",
    reads=("reconstruct",),
    outputs=("**/mesh.*",),
    config_keys=("mesh", "scene"),
    # --select all: OUT/mesh/sample_K/mesh.glb is published as OUT/sample_K/mesh.glb
    publish=_FILES + tuple(f"sample_*/{name}" for name in _FILES),
    version=3,  # 2: textures, sample folders; 3: components above mesh.min_component kept
    run=run,
    check_config=check_config,
    config=MeshConfig,
    report=panel,
)
