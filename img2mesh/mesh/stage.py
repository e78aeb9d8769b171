"""The mesh stage: marching cubes of the trained field, clean-up, decimation, texture, export, previews."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from img2mesh.mesh.config import MeshConfig
from img2mesh.mesh.panel import panel
from img2mesh.pipeline.contract import Stage, StageContext

FRAME = "glTF: +Y up, input view along +Z; (X,Y,Z) = world (y,z,x)"


@dataclass(frozen=True)
class PhotoInput:
    """Where the run's photo is: the segment stage's folder, its framing and the elevation estimate."""

    segment_dir: Path
    crop_size: int
    elevation_deg: float


def make_mesh(ctx: StageContext, field_dir: Path, out_dir: Path, photo: Optional[PhotoInput] = None) -> dict[str, Any]:
    """Mesh the field saved in ``field_dir`` into ``out_dir``; facts for the manifest."""
    import numpy as np
    import torch

    from img2mesh.errors import StageError
    from img2mesh.mesh.export import export_mesh
    from img2mesh.mesh.extract import keep_components, marching_cubes, sdf_grid
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
    surface = mesh  # the quad remesher follows the surface before decimation: the most detail
    if cfg.target_faces and len(mesh.faces) > cfg.target_faces:
        mesh = mesh.simplify_quadric_decimation(face_count=cfg.target_faces)
    info: dict[str, Any] = {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
                            "faces_before_cleanup": raw_faces, "components": kept, "components_dropped": dropped,
                            "watertight": bool(mesh.is_watertight),
                            "watertight_before_decimation": watertight_before}
    with ctx.progress("projecting the views onto the surface", total=1) as task:
        colours, source_facts = surface_colours(ctx, field, field_dir, mesh, photo, out_dir)
        task.advance()
    info.update(source_facts)
    size = texture_size(cfg, mesh, colours)
    quad_written, quad_info = [], {}
    if cfg.remesh == "quad":
        quad_written, quad_info = make_quad_mesh(ctx, surface, colours, size, out_dir)
    rgb = (colours(np.asarray(mesh.vertices)) * 255).round().clip(0, 255).astype(np.uint8)
    mesh.visual.vertex_colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)
    colours.reset_stats()  # what the manifest says of the bake is the texture's
    textured = None
    if cfg.texture and {"glb", "obj"} & set(cfg.formats):
        from img2mesh.mesh.texture import texture_mesh

        with ctx.progress(f"texture {size}²", total=1) as task:
            textured, facts = texture_mesh(mesh, size, colours, device)
            task.advance()
        info.update(facts)
    info.update(colours.stats.facts())
    info["bake_seconds"] = round(colours.seconds, 2)  # projecting and colouring (not unwrapping)
    info.update(quad_info)
    written = export_mesh(mesh, out_dir, cfg.formats, textured) + quad_written
    if textured is not None:
        written += write_texture_views(textured, out_dir, written, photo)
    if cfg.preview:
        with ctx.progress("previews", total=1) as task:
            written += write_previews(textured if textured is not None else mesh, out_dir)
            task.advance()
    return {**info, "files": [p.name for p in written], "frame": FRAME}


def surface_colours(ctx: StageContext, field: Any, field_dir: Path, mesh: Any, photo: Optional[PhotoInput],
                    out_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The colour source of the bake (``mesh.bake``): the views ``reconstruct`` fitted, at their fitted
    cameras and colour-corrected, and the photo registered to the mesh; or the field. A field saved
    before its views were (an older reconstruct) is baked from the field along the standard cameras."""
    import numpy as np
    import torch

    from img2mesh.mesh.bake import Source, SurfaceColours
    from img2mesh.reconstruct.fitted import load_fitted
    from img2mesh.utils import cameras

    cfg = ctx.config.mesh
    device = torch.device(ctx.device)
    vertices, faces = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces)
    fitted = load_fitted(field_dir)
    facts: dict[str, Any] = {"bake": cfg.bake}
    if fitted is None:
        ctx.log.warning("mesh: %s holds no fitted views (made by an older img2mesh); baking from the field "
                        "(re-run reconstruct for a texture projected from the views)", field_dir)
        sources = [Source(None, None, cameras.intrinsics(), pose, f"view {i}")
                   for i, pose in enumerate(cameras.target_poses())]
        facts["bake"] = "field"
        return SurfaceColours(field, device, sources, vertices, faces, mode="field"), facts
    sources = [Source(fitted.corrected(i), fitted.masks[i], fitted.Ks[i], fitted.poses[i], f"view {i}")
               for i in range(len(fitted.images))]
    photo_source = None
    if photo is not None and cfg.photo and cfg.bake == "views":
        photo_source, registration = photo_view(ctx, photo, vertices, faces, out_dir)
        facts.update(registration)
        if registration["photo_iou_after"] < PHOTO_MIN_IOU:  # its colours would land on the wrong surface
            ctx.log.warning("mesh: the mesh's silhouette matches the photo's only at IoU %.2f after registration "
                            "(below %.2f): the photo is not projected onto it", registration["photo_iou_after"],
                            PHOTO_MIN_IOU)
            photo_source = None
        facts["photo_projected"] = photo_source is not None
    facts["bake_blend"] = cfg.blend
    return SurfaceColours(field, device, sources, vertices, faces, mode=cfg.bake, how=cfg.blend,
                          photo=photo_source), facts


PHOTO_LARGEST = 2048  # the photo is projected at its own resolution up to this framed size
PHOTO_MIN_IOU = 0.7  # below this silhouette IoU the mesh is not the photo's object: the photo is not projected
# (registered reconstructions score 0.94-0.99 on the texture benchmark; the demo's noise mesh 0.38)


def photo_view(ctx: StageContext, photo: PhotoInput, vertices: Any, faces: Any, out_dir: Path) -> tuple[Any, dict]:
    """The photo as a bake source at its own resolution, its camera registered to the mesh's silhouette
    (saved as ``photo_camera.json``); facts: the IoU before and after, and the corrections found."""
    import torch

    from img2mesh.mesh.bake import Source
    from img2mesh.mesh.photo import REGISTER_SIZE, register_photo
    from img2mesh.segment.recentre import framed_photo, native_frame_size

    _, mask = framed_photo(photo.segment_dir, photo.crop_size, REGISTER_SIZE)
    camera = register_photo(vertices, faces, mask, photo.elevation_deg, torch.device(ctx.device))
    camera.save(out_dir)
    ctx.log.info("mesh: photo registered to the mesh's silhouette: IoU %.3f -> %.3f (shift %.1f, %.1f px, scale %.3f, "
                 "rotation %.1f deg, elevation %+.1f deg)", camera.iou_before, camera.iou_after, *camera.shift_px,
                 camera.scale, camera.rotation_deg, camera.elevation_correction_deg)
    size = native_frame_size(photo.segment_dir, photo.crop_size, PHOTO_LARGEST)
    image, full_mask = framed_photo(photo.segment_dir, photo.crop_size, size)
    K, pose = camera.at_size(size)
    source = Source(image.astype("float32") / 255.0, full_mask.astype("float32"), K, pose, "photo")
    return source, {"photo_size": size, "photo_iou_before": camera.iou_before, "photo_iou_after": camera.iou_after,
                    "photo_elevation_correction_deg": camera.elevation_correction_deg}


TEXTURE_COVERAGE = 0.4  # the share of the atlas xatlas' charts cover (measured 0.38-0.42 on GSO meshes)


def texture_size(cfg: Any, mesh: Any, colours: Any) -> int:
    """``mesh.texture_size``, or for "auto" the power of two at which a texel is no larger than the finest
    source pixel on a surface facing it (512 to ``mesh.texture_max``)."""
    import math

    import numpy as np

    if cfg.texture_size != "auto":
        return int(cfg.texture_size)
    density = max(projector.pixels_per_unit() for projector in colours.projectors())  # pixels per world unit
    texels = float(mesh.area) * density ** 2 / TEXTURE_COVERAGE
    size = 2 ** math.ceil(math.log2(max(np.sqrt(texels), 1.0)))
    return int(min(max(size, 512), cfg.texture_max))


def write_texture_views(textured: Any, out_dir: Path, written: list[Path], photo: Optional[PhotoInput]) -> list[Path]:
    """``mesh_albedo.png`` (the atlas, when no OBJ wrote it) and, after a photo registration,
    ``photo_compare.png``: the photo beside the textured mesh rendered at the registered photo camera."""
    import numpy as np

    from img2mesh.mesh.photo import PhotoCamera
    from img2mesh.mesh.preview import render
    from img2mesh.mesh.texture import MATERIAL
    from img2mesh.segment.recentre import framed_photo
    from img2mesh.utils.files import atomic_save_image

    extra = []
    atlas = out_dir / f"{MATERIAL}.png"
    if atlas not in written:
        atomic_save_image(atlas, np.asarray(textured.visual.material.baseColorTexture.convert("RGB")))
        extra.append(atlas)
    camera = PhotoCamera.load(out_dir)
    if camera is not None and photo is not None:
        size = 384
        K, pose = camera.at_size(size)
        shown, _ = framed_photo(photo.segment_dir, photo.crop_size, size)
        path = out_dir / "photo_compare.png"
        atomic_save_image(path, np.concatenate([shown, render(textured, K, pose, size, shading=False)], 1))
        extra.append(path)
    return extra


def make_quad_mesh(ctx: StageContext, mesh: Any, color_fn: Any, texture_size: int,
                   out_dir: Path) -> tuple[list[Path], dict[str, Any]]:
    """``mesh_quad.obj`` (quads, in the export frame) with its own texture (at least ``texture_size``²)
    when texturing is on."""
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
        atlas = quad_atlas(len(quads.quads), texture_size)
        with ctx.progress(f"quad texture {atlas.size}²", total=1) as task:
            texture = bake_quads(quads, atlas, color_fn)
            task.advance()
        info["quad_texture_size"] = atlas.size
    exported = type(quads)(quads.vertices @ WORLD_TO_EXPORT.T, quads.quads)
    written = write_quad_obj(exported, out_dir / "mesh_quad.obj", atlas, texture)
    info["quad_seconds"] = round(time.perf_counter() - start, 2)
    return written, info


def run(ctx: StageContext) -> dict[str, Any]:
    from img2mesh.generate.sets import PER_SET, result_folders

    photo = None
    if "segment" in ctx.upstream:  # img2mesh run: the photo and its elevation; a views folder has neither
        import json

        elevation = json.loads((ctx.stage_dir("elevation") / "elevation.json").read_text())["elevation_deg"]
        photo = PhotoInput(ctx.stage_dir("segment"), ctx.config.segment.crop_size, float(elevation))
    folders = result_folders(ctx.stage_dir("reconstruct"), "field.json")  # as reconstruct laid them out
    if len(folders) == 1 and folders[0][0] is None:
        return make_mesh(ctx, folders[0][1], ctx.out_dir, photo)
    per_set = {}
    for _, folder in folders:
        ctx.log.info("mesh: %s", folder.name)
        per_set[folder.name] = make_mesh(ctx, folder, ctx.out_dir / folder.name, photo)
    return {PER_SET: per_set, "frame": FRAME}


def check_config(config: Any) -> None:
    """``--remesh quad`` needs its optional package: say so before any stage runs, not after hours."""
    if config.mesh.remesh == "quad":
        from img2mesh.mesh.remesh import check_quad_remesher

        check_quad_remesher()


_FILES = ("mesh.glb", "mesh.ply", "mesh.obj", "mesh.mtl", "mesh_albedo.png", "preview.png", "turntable.mp4",
          "turntable.gif", "mesh_quad.obj", "mesh_quad.mtl", "mesh_quad_albedo.png")
# img2mesh run: the photo (segment) at its elevation (elevation) is a texture source too
STAGE = Stage(
    name="mesh",
    description="marching cubes, components, decimation, texture projected from the views and the photo, export",
    reads=("reconstruct", "segment", "elevation"),
    outputs=("**/mesh.*",),
    config_keys=("mesh", "scene", "segment.crop_size"),
    # --select all: OUT/mesh/sample_K/mesh.glb is published as OUT/sample_K/mesh.glb
    publish=_FILES + tuple(f"sample_*/{name}" for name in _FILES),
    version=4,  # bumped when results change; what each version changed: CHANGELOG.md, "Stage versions"
    run=run,
    check_config=check_config,
    config=MeshConfig,
    report=panel,
)
# img2mesh reconstruct VIEWS: no photo
FOLDER_STAGE = dataclasses.replace(STAGE, reads=("reconstruct",), config_keys=("mesh", "scene"))
