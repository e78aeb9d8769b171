"""The mesh stage: marching cubes of the trained field, clean-up, vertex colours, export, previews."""

from __future__ import annotations

from typing import Any

from img2mesh.pipeline.stage import Stage, StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    import torch

    from img2mesh.mesh.export import export_mesh
    from img2mesh.mesh.extract import keep_main_component, marching_cubes, sdf_grid, vertex_colors
    from img2mesh.mesh.preview import write_previews
    from img2mesh.reconstruct.stage import load_field

    cfg = ctx.config.mesh
    device = torch.device(ctx.device)
    field = load_field(ctx.stage_dir("reconstruct"), ctx.device)
    with ctx.progress("marching cubes", total=1) as task:
        values = sdf_grid(field, cfg.resolution, cfg.bound, device)
        task.advance()
    try:
        mesh = marching_cubes(values, cfg.bound)
    except ValueError as exc:
        from img2mesh.errors import StageError

        raise StageError(f"mesh: {exc} (the reconstruction failed; try more reconstruct.steps)") from None
    raw_faces = len(mesh.faces)
    mesh = keep_main_component(mesh)
    if cfg.target_faces and len(mesh.faces) > cfg.target_faces:
        mesh = mesh.simplify_quadric_decimation(face_count=cfg.target_faces)
    mesh.visual.vertex_colors = vertex_colors(field, mesh.vertices, device)
    written = export_mesh(mesh, ctx.out_dir, cfg.formats)
    if cfg.preview:
        with ctx.progress("previews", total=1) as task:
            written += write_previews(mesh, ctx.out_dir)
            task.advance()
    return {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
            "faces_before_cleanup": raw_faces, "watertight": bool(mesh.is_watertight),
            "files": [p.name for p in written], "frame": "glTF: +Y up, input view along +Z; (X,Y,Z) = world (y,z,x)"}


STAGE = Stage(
    name="mesh",
    description="marching cubes, largest component, vertex colours, export and previews",
    reads=("reconstruct",),
    outputs=("mesh.*",),
    config_keys=("mesh",),
    publish=("mesh.glb", "mesh.ply", "mesh.obj", "preview.png", "turntable.mp4", "turntable.gif"),
    run=run,
)
