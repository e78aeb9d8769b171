"""The reconstruction recipe adapted to the views (``reconstruct.adapt``): how much do they disagree?

Renders of a real object agree exactly: every view's silhouette is explained by the hull of all of them.
Generated views are each a little misplaced, and the hull of misplaced silhouettes explains less of each
one. Before fitting, the silhouettes' agreement (``utils.hull.silhouette_agreement``, the share of each
view's foreground whose ray meets the hull of all views, at AGREEMENT_SIZE² or the views' own size
when smaller) gives one number, the disagreement ``1 - mean agreement``: at most 0.0018 for exact
renders of the twelve shared GSO objects (0.0007 with alpha dropped), 0.0058 to 0.089 for views degraded
like SyncDreamer's (docs/robustness.md; three seeds). A thick object that fills most of the frame hides
a few pixels of misplacement from it (cream: 0.0001 to 0.0004), and such views get the accurate recipe.

Views that agree (disagreement below CONSISTENT) get the accurate recipe, which exact views do not pay
for: an L1 colour term, no silhouette margin, no appearance codes, fixed cameras, the strict hull. Views
that disagree first have their cameras registered to their silhouettes (``reconstruct.register``,
``register.py``); when they agree after it they too get the accurate recipe (the "registered" recipe:
the levers would fit around a misplacement that is no longer there), otherwise the robust levers as
configured (``color_loss``, ``mask_margin``, ``appearance_dim``, ``pose_refine``, ``hull_tolerance``:
the "tolerant" recipe).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

if TYPE_CHECKING:
    from img2mesh.reconstruct.config import ReconstructConfig
    from img2mesh.reconstruct.views import Views

AGREEMENT_SIZE = 128  # silhouettes are compared at this size, so the measure does not depend on the views' size
AGREEMENT_RAYS = 1024  # foreground pixels per view tested (seconds, not a minute, on noise views on a CPU)
CONSISTENT = 0.003  # below this the views are treated as exact (chosen on six objects, confirmed on six: docs/robustness.md)
ACCURATE = {"color_loss": "l1", "mask_margin": 0, "appearance_dim": 0, "pose_refine": False, "hull_tolerance": 0}


def disagreement(views: "Views", bound: float) -> float:
    """1 - the mean silhouette agreement of the views (0 for exact views), measured at AGREEMENT_SIZE² (or
    the views' own size when smaller) with one pixel of slack (a silhouette's own quantisation is not
    disagreement); a view whose frame cuts the object carves nothing it cannot see."""
    from img2mesh.utils.hull import silhouette_agreement
    from img2mesh.utils.images import shrink

    width, height = views.size
    # never upsampled: a small view's own pixels are its quantisation, and one pixel of slack covers them
    size = min(AGREEMENT_SIZE, width, height)
    masks = np.stack([shrink(m, size) >= 0.5 for m in views.masks])
    Ks = np.array(views.Ks, dtype=np.float64).copy()
    Ks[:, 0] *= size / width
    Ks[:, 1] *= size / height
    agreement = silhouette_agreement(masks, Ks, views.poses, bound, slack=1, outside_carves=False,
                                     max_rays=AGREEMENT_RAYS)
    return float(1.0 - agreement.mean())


@dataclass(frozen=True)
class Recipe:
    """The levers a fit runs with, and why."""

    name: str  # "accurate", "registered" (moved until they agree, then accurate), "tolerant" or "as configured"
    disagreement: Optional[float]  # None when not measured (reconstruct.adapt and register off)
    levers: dict[str, Any]
    registration: dict[str, Any] = dataclasses.field(default_factory=dict)  # what registration moved, in words
    moves: Optional[np.ndarray] = None  # the registration's moves (``register.Registration``) when views moved

    def facts(self) -> dict[str, Any]:
        measured = None if self.disagreement is None else round(self.disagreement, 4)
        return {"recipe": self.name, "view_disagreement": measured, **self.levers, **self.registration}


def choose(cfg: "ReconstructConfig", views: "Views", bound: float,
           native: Optional[Callable[[], "Views"]] = None) -> tuple["ReconstructConfig", Recipe, "Views"]:
    """``cfg`` with the levers the views call for (``reconstruct.adapt``), the recipe for the manifest, and
    the views with their cameras registered (``reconstruct.register``) when they were: on the views at
    their own size (``native``, asked for only then) when training resized them, since a registration
    at 128² finds half a 256² view's pixels of precision."""
    levers = tuple(ACCURATE)
    value = disagreement(views, bound) if cfg.adapt or cfg.register else None
    if cfg.adapt and value < CONSISTENT:
        return dataclasses.replace(cfg, **ACCURATE), Recipe("accurate", value, dict(ACCURATE)), views
    registration: dict[str, Any] = {}
    moves = None
    if cfg.register and value >= CONSISTENT:  # views that agree are never moved
        views, registration, moves = registered(views, bound, value, native() if native else views)
        # Views that agree once their cameras are moved get the accurate recipe too: the levers fitted
        # around the misplacement registration has undone, and cost what they cost exact views.
        if cfg.adapt and registration["registered"] and registration["view_disagreement_registered"] < CONSISTENT:
            return (dataclasses.replace(cfg, **ACCURATE),
                    Recipe("registered", value, dict(ACCURATE), registration, moves), views)
    name = "tolerant" if cfg.adapt else "as configured"
    return cfg, Recipe(name, value, {k: getattr(cfg, k) for k in levers}, registration, moves), views


def registered(views: "Views", bound: float, before: float,
               native: "Views") -> tuple["Views", dict[str, Any], Optional[np.ndarray]]:
    """The views with each camera moved to where its silhouette agrees with the others
    (``reconstruct/register.py``, on the same views at their own size, ``native``), what moved, and the
    moves; the views as they were when no move made the silhouettes agree better."""
    import time

    from img2mesh.reconstruct.register import moved_cameras, register

    start = time.perf_counter()
    found = register(native, bound, before if native is views else None)  # measured on the views it moves
    seconds = {"register_seconds": round(time.perf_counter() - start, 2)}
    if found is None:
        return views, {"registered": False, **seconds}, None
    Ks, poses = moved_cameras(views.Ks, views.poses, found.moves, *views.size)
    return dataclasses.replace(views, Ks=Ks, poses=poses), {"registered": True, **found.summary(native.size[0]), **seconds}, \
        found.moves
