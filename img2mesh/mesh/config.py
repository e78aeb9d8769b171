"""The ``mesh`` section of the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from img2mesh.errors import UsageError
from img2mesh.pipeline.config import Section, setting


@dataclass
class MeshConfig(Section):
    resolution: int = setting(256, "marching-cubes grid over [-scene.bound, scene.bound]^3", minimum=1)
    min_component: float = setting(0.01, "keep components with at least this fraction of the faces (1 = largest "
                                         "only)", minimum=0.0, maximum=1.0)
    formats: list[Literal["glb", "ply", "obj"]] = setting(factory=lambda: ["glb"], help="files to write: glb, ply, obj")
    target_faces: Optional[int] = setting(100_000, "quadric decimation before unwrapping; null = keep all", minimum=1)
    texture: bool = setting(True, "UV-unwrap (xatlas) and bake an albedo texture into GLB and OBJ")
    texture_size: Union[Literal["auto"], int] = setting("auto", "texture width and height in texels; auto: enough "
                                                                "that the photo and views are not undersampled "
                                                                "(a power of two, 512 to texture_max)", minimum=1)
    texture_max: int = setting(2048, "the largest texture auto picks", minimum=64)
    bake: Literal["views", "field"] = setting("views", "colour source: the fitted views and the photo projected onto "
                                                       "the mesh, or the colour field along its trained directions")
    blend: Literal["robust", "median", "mean"] = setting("robust", "how the views' colours of a point are blended: "
                                                                   "robust (outlying views count less), median, mean")
    photo: bool = setting(True, "project the photo (registered to the mesh's silhouette) with priority where it "
                                "sees the surface")
    preview: bool = setting(True, "turntable.mp4 (GIF without ffmpeg) and preview.png")
    remesh: Literal["none", "quad"] = setting("none", "quad: also mesh_quad.obj, Instant Meshes quads (~target_faces)")

    def validate(self, prefix: str) -> None:
        if not self.formats:
            raise UsageError(f"config key {prefix}formats: name at least one of glb, ply, obj")
