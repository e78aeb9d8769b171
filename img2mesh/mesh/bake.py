"""Colouring the surface from the images themselves: the views the field was fitted to and the photo.

For each surface point (a texel's, a vertex's, a quad texel's) every source image that sees it gives a
colour and a weight. A source sees a point when the point faces its camera, lies inside its image and
passes a depth test against the final mesh rasterised at that camera. The weight favours head-on views
(cos^``COS_POWER`` of the angle between the normal and the camera) and pixels away from the image's
silhouette and from depth discontinuities, where a pixel mixes object and background or two surfaces
(a ramp over ``EDGE_PX`` pixels of a 256² view). Generated views invent details of their own, so the
views are blended robustly (``mesh.blend``): ``robust`` starts from the weighted median and down-weights
colours far from it (iteratively reweighted, Cauchy), ``median`` is the weighted median per channel,
``mean`` the weighted mean.

Points no view sees (bottoms, deep concavities) take the field's colour, queried along the directions
the field was trained on (cosine-weighted over the cameras that face the point; the nearest camera when
none does), blended in as the views' weight falls off so that there is no hard edge at grazing angles.
The photo, when there is one, has priority where it sees the surface head-on, fading into the views'
colour towards grazing angles and its silhouette. One :class:`SurfaceColours` serves the UV texture,
the vertex colours and the quad bake.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F

from img2mesh.utils.raster import rasterize

if TYPE_CHECKING:
    from img2mesh.reconstruct.fields import NeuSField

Blend = Literal["robust", "median", "mean"]
COS_POWER = 2.0  # head-on weighting: cos² (not tuned; the ceiling row of the texture benchmark uses cos⁴)
MIN_COS = 0.05  # a surface seen at more than ~87° from its normal is not seen
EDGE_PX = 3.0  # the reliability ramp along silhouettes and depth steps, in pixels of a 256² view
DEPTH_TOLERANCE = 0.02  # world units: a point this far behind the mesh's depth at its pixel is occluded
DEPTH_STEP = 0.05  # world units between neighbouring pixels: a depth discontinuity
ROBUST_SCALE = 0.08  # Cauchy scale of the robust blend, in colour units (about 20 of 255)
ROBUST_ITERATIONS = 3
FIELD_WEIGHT = 0.02  # the field's colour counts like a view seen at cos ~0.14 (it fills what views miss)
PHOTO_COS = (0.2, 0.5)  # the photo's share ramps from 0 (78° from head-on) to 1 (60°)
CHUNK = 65536


@dataclass
class Source:
    """One image to project: colours on white (H,W,3 float in [0, 1]), soft mask (H,W), K, w2c pose.

    A source without an image (None) is a camera only: it says what the field bake sees from there,
    at the standard 256² view size.
    """

    image: Optional[np.ndarray]
    mask: Optional[np.ndarray]
    K: np.ndarray
    pose: np.ndarray
    name: str

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return self.image.shape[:2] if self.image is not None else (256, 256)

    @property
    def centre(self) -> np.ndarray:
        return -self.pose[:, :3].T @ self.pose[:, 3]


class Projector:
    """One source's view of the final mesh: its depth map and how reliable each of its pixels is."""

    def __init__(self, source: Source, vertices: np.ndarray, faces: np.ndarray, device: torch.device) -> None:
        from scipy import ndimage

        self.source = source
        height, width = source.shape
        raster = rasterize(torch.tensor(vertices, dtype=torch.float32, device=device),
                           torch.tensor(faces, dtype=torch.long, device=device),
                           torch.tensor(source.K, dtype=torch.float32, device=device),
                           torch.tensor(source.pose, dtype=torch.float32, device=device), width, height)
        depth = raster.depth.cpu().numpy().astype(np.float64)
        self.depth = depth
        covered = np.isfinite(depth)
        steps = np.zeros_like(covered)
        finite = np.where(covered, depth, 1e9)
        steps[:, 1:] |= np.abs(finite[:, 1:] - finite[:, :-1]) > DEPTH_STEP
        steps[:, :-1] |= np.abs(finite[:, 1:] - finite[:, :-1]) > DEPTH_STEP
        steps[1:] |= np.abs(finite[1:] - finite[:-1]) > DEPTH_STEP
        steps[:-1] |= np.abs(finite[1:] - finite[:-1]) > DEPTH_STEP
        mask = source.mask if source.mask is not None else np.ones((height, width), np.float32)
        good = covered & (mask >= 0.5) & ~steps
        distance = ndimage.distance_transform_edt(np.pad(good, 1))[1:-1, 1:-1]  # image borders count as edges
        ramp = EDGE_PX * width / 256.0
        self.reliability = np.clip((distance - 0.5) / ramp, 0.0, 1.0) * np.clip(mask, 0.0, 1.0)
        self.pixel_size = 1.0 / float(source.K[0, 0])  # world units per pixel at unit depth

    def pixels_per_unit(self) -> float:
        """The source's resolution on a surface facing it at the scene's centre: pixels per world unit."""
        return float(self.source.K[0, 0]) / max(float(np.linalg.norm(self.source.centre)), 1e-6)

    def sample(self, points: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Colours (N,3), facing cosines (N,; 0 where the source does not see the point) and pixel
        reliabilities (N,) of ``points`` with unit ``normals``."""
        src = self.source
        height, width = src.shape
        cam = points @ src.pose[:, :3].T + src.pose[:, 3]
        z = cam[:, 2]
        safe = np.where(z > 1e-6, z, 1.0)
        u = src.K[0, 0] * cam[:, 0] / safe + src.K[0, 1] * cam[:, 1] / safe + src.K[0, 2]
        v = src.K[1, 1] * cam[:, 1] / safe + src.K[1, 2]
        to_camera = src.centre - points
        to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True).clip(min=1e-12)
        cos = (normals * to_camera).sum(1)
        inside = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height) & (cos > MIN_COS)
        px = np.clip(u.astype(np.int64), 0, width - 1)
        py = np.clip(v.astype(np.int64), 0, height - 1)
        # a grazing surface changes depth fast across its pixel: allow for it
        tolerance = DEPTH_TOLERANCE + 2.0 * self.pixel_size * z / np.maximum(cos, 0.2)
        visible = inside & (z <= self.depth[py, px] + tolerance)
        colours = bilinear(src.image, u, v) if src.image is not None else np.zeros((len(points), 3))
        reliability = bilinear(self.reliability[..., None], u, v)[:, 0]
        return colours, np.where(visible, cos, 0.0), np.where(visible, reliability, 0.0)


def bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples (N,C) of an H,W,C image at continuous pixel coordinates (pixel centres at +0.5)."""
    height, width = image.shape[:2]
    x = np.clip(u - 0.5, 0, width - 1)
    y = np.clip(v - 0.5, 0, height - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), width - 2 if width > 1 else 0)
    y0 = np.minimum(np.floor(y).astype(np.int64), height - 2 if height > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def weighted_median(colours: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per point and channel, the weighted median over sources: colours (S,N,3), weights (S,N) -> (N,3)."""
    order = np.argsort(colours, axis=0)
    sorted_colours = np.take_along_axis(colours, order, 0)
    sorted_weights = np.take_along_axis(np.broadcast_to(weights[..., None], colours.shape), order, 0)
    cumulative = np.cumsum(sorted_weights, 0)
    half = cumulative[-1:] * 0.5
    index = (cumulative < half).sum(0, keepdims=True).clip(max=len(colours) - 1)
    return np.take_along_axis(sorted_colours, index, 0)[0]


def blend(colours: np.ndarray, weights: np.ndarray, how: Blend) -> np.ndarray:
    """The sources' colours (S,N,3) blended per point with ``weights`` (S,N); points with no weight get 0."""
    total = weights.sum(0)
    safe = np.where(total > 0, total, 1.0)[:, None]
    if how == "mean":
        return (weights[..., None] * colours).sum(0) / safe
    centre = weighted_median(colours, weights)
    if how == "median":
        return centre
    for _ in range(ROBUST_ITERATIONS):  # Cauchy IRLS from the median: outlying views count less
        residual = np.linalg.norm(colours - centre[None], axis=-1)
        robust = weights / (1.0 + (residual / ROBUST_SCALE) ** 2)
        norm = robust.sum(0)
        centre = np.where(norm[:, None] > 0, (robust[..., None] * colours).sum(0) / np.where(norm > 0, norm, 1.0)[:, None],
                          centre)
    return centre


def surface_query(field_: "NeuSField", points: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The field at ``points``: the points, unit normals (from the SDF's gradient) and the SDF network's
    features (what the colour network reads), as tensors on ``device``."""
    x = torch.tensor(points, dtype=torch.float32, device=device)
    _, features, grad = field_.sdf_and_gradient(x, create_graph=False)
    return x, F.normalize(grad, dim=-1).detach(), features.detach()


def field_colours(field_: "NeuSField", query: tuple[torch.Tensor, ...], centres: np.ndarray,
                  weights: Optional[np.ndarray] = None) -> np.ndarray:
    """The field's colour (N,3) at the points of ``query`` (:func:`surface_query`) seen from the training
    cameras (``centres``, S,3): the mean over the cameras weighted by ``weights`` (S,N; default: cos² of
    every camera the point faces), or along the nearest camera's ray where no camera has weight."""
    x, normal, features = query
    device = x.device
    c = torch.tensor(centres, dtype=torch.float32, device=device)
    to_point = F.normalize(x[None] - c[:, None], dim=-1)  # S,N,3: each camera's ray direction at the point
    facing = -(to_point * normal[None]).sum(-1)  # S,N
    if weights is None:
        w = facing.clamp(min=0) ** COS_POWER
    else:
        w = torch.tensor(weights, dtype=torch.float32, device=device)
    none = w.sum(0) <= 0
    if none.any():  # the nearest trained direction: the camera the point faces most
        w[:, none] = 0.0
        w[facing.argmax(0)[none], none.nonzero().squeeze(1)] = 1.0
    out = torch.zeros(len(x), 3, device=device)
    with torch.no_grad():
        for s in range(len(c)):
            used = w[s] > 0
            if used.any():
                rgb = field_.color(x[used], normal[used], to_point[s, used], features[used])
                out[used] += w[s, used, None] * rgb.float()
    out = out / w.sum(0)[:, None].clamp(min=1e-12)
    return out.cpu().numpy().astype(np.float64)


@dataclass
class BakeStats:
    """What a bake used, for the manifest: points coloured, and how many took each path."""

    points: int = 0
    from_views: int = 0
    from_field_only: int = 0
    from_photo: int = 0

    def facts(self) -> dict[str, float]:
        share = lambda n: round(n / self.points, 4) if self.points else 0.0  # noqa: E731
        return {"bake_points": self.points, "bake_seen_by_views": share(self.from_views),
                "bake_field_only": share(self.from_field_only), "bake_photo": share(self.from_photo)}


class SurfaceColours:
    """RGB (N,3 float in [0, 1]) at surface points, from the views and the photo (``mode="views"``) or
    from the field along trained directions (``mode="field"``). Callable on points (N,3)."""

    def __init__(self, field_: "NeuSField", device: torch.device, views: list[Source], vertices: np.ndarray,
                 faces: np.ndarray, mode: Literal["views", "field"] = "views", how: Blend = "robust",
                 photo: Optional[Source] = None) -> None:
        started = time.perf_counter()
        self.field, self.device, self.mode, self.how = field_, device, mode, how
        self.centres = np.stack([v.centre for v in views])
        self.views = [Projector(v, vertices, faces, device) for v in views]
        self.photo = Projector(photo, vertices, faces, device) if photo is not None and mode == "views" else None
        self.stats = BakeStats()
        self.seconds = time.perf_counter() - started  # every projection and colouring so far (not reset)

    def projectors(self) -> list[Projector]:
        """Every source's projector, the photo's included."""
        return self.views + ([self.photo] if self.photo is not None else [])

    def reset_stats(self) -> None:
        """Count afresh (the texture's facts, not the vertex colours' before it)."""
        self.stats = BakeStats()

    def __call__(self, points: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        points = np.asarray(points, dtype=np.float64)
        parts = [self._chunk(points[i:i + CHUNK]) for i in range(0, len(points), CHUNK)]
        self.seconds += time.perf_counter() - started
        return np.concatenate(parts) if parts else np.zeros((0, 3))

    def _chunk(self, points: np.ndarray) -> np.ndarray:
        query = surface_query(self.field, points, self.device)
        normals = query[1].cpu().numpy().astype(np.float64)
        samples = [p.sample(points, normals) for p in self.views]
        colours = np.stack([s[0] for s in samples])
        cos = np.stack([s[1] for s in samples])
        seen_weights = np.maximum(cos, 0.0) ** COS_POWER  # the cameras that see the point, head-on first
        self.stats.points += len(points)
        if self.mode == "field":
            return np.clip(field_colours(self.field, query, self.centres, seen_weights), 0.0, 1.0)
        weights = seen_weights * np.stack([s[2] for s in samples])
        total = weights.sum(0)
        result = blend(colours, weights, self.how)
        faint = total < 10 * FIELD_WEIGHT  # only there does the field's colour count for much
        if faint.any():
            sub = tuple(t[torch.from_numpy(faint).to(t.device)] for t in query)
            fallback = field_colours(self.field, sub, self.centres, seen_weights[:, faint])
            result[faint] = ((total[faint, None] * result[faint] + FIELD_WEIGHT * fallback)
                             / (total[faint] + FIELD_WEIGHT)[:, None])
        self.stats.from_views += int((total > 0).sum())
        self.stats.from_field_only += int((total <= 0).sum())
        if self.photo is not None:
            photo_colour, photo_cos, reliability = self.photo.sample(points, normals)
            share = smoothstep((photo_cos - PHOTO_COS[0]) / (PHOTO_COS[1] - PHOTO_COS[0])) * reliability
            result = share[:, None] * photo_colour + (1 - share[:, None]) * result
            self.stats.from_photo += int((share > 0.5).sum())
        return np.clip(result, 0.0, 1.0)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a smooth cubic between."""
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3 - 2 * t)
