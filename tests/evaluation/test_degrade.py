"""The robustness benchmark's degradation (``evaluation/degrade.py``): seeded, per view, and what it says."""

from __future__ import annotations

import numpy as np

from img2mesh.evaluation.degrade import LEVELS, degrade_views, view_psnr


def renders(count: int = 4, size: int = 64) -> np.ndarray:
    """RGBA uint8 views of a coloured disc, each a little different."""
    yy, xx = np.mgrid[:size, :size]
    views = []
    for i in range(count):
        disc = ((yy - size / 2) ** 2 + (xx - size / 2 - i) ** 2 < (size / 4) ** 2)
        rgb = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 40 * i)], -1)
        views.append(np.dstack([rgb, disc * 255]).astype(np.uint8))
    return np.stack(views)


def test_the_same_seed_gives_the_same_views_bit_for_bit():
    views = renders()
    first, again = degrade_views(views, LEVELS[3], seed=7), degrade_views(views, LEVELS[3], seed=7)
    assert first.dtype == np.uint8 and first.shape == (4, 64, 64, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, degrade_views(views, LEVELS[3], seed=8))


def test_a_view_does_not_depend_on_how_many_others_there_are():
    views = renders()
    assert np.array_equal(degrade_views(views[:2], LEVELS[2], seed=3), degrade_views(views, LEVELS[2], seed=3)[:2])


def test_level_zero_only_drops_alpha():
    views = renders()
    alpha = views[..., 3:].astype(np.float64) / 255
    on_white = (views[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    assert np.array_equal(degrade_views(views, LEVELS[0], seed=0), on_white)


def test_higher_levels_are_further_from_the_clean_views():
    views = renders()
    clean = degrade_views(views, LEVELS[0], seed=0)
    psnrs = [np.mean([view_psnr(a, b) for a, b in zip(clean, degrade_views(views, LEVELS[level], seed=0))])
             for level in (1, 2, 3)]
    assert psnrs[0] > psnrs[1] > psnrs[2], psnrs
