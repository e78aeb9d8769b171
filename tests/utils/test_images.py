"""The white-background mask and matte: views that arrive without alpha."""

import numpy as np
from scipy import ndimage

from img2mesh.utils.images import clean_mask, white_background_mask, white_background_matte


def blurred_on_white(alpha: np.ndarray, colour: tuple[float, float, float], sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """A flat-coloured object blurred like a decoded view and composited on white (8-bit): image, true alpha."""
    soft = ndimage.gaussian_filter(alpha.astype(np.float64), sigma)
    rgb = soft[..., None] * np.array(colour) + (1 - soft[..., None])
    return (np.round(rgb * 255) / 255).astype(np.float32), soft


def test_the_matte_undoes_the_thresholds_growth_on_a_blurred_view():
    """A dark disc blurred by 1 px (the typical degradation): the threshold's silhouette grows by about 1.5 px; the
    matte's silhouette (>= 0.5) is the blurred alpha's within a fifth of a pixel all round, and its soft
    values follow the true alpha along the edge."""
    yy, xx = np.mgrid[:96, :96]
    disc = (yy - 48) ** 2 + (xx - 48) ** 2 <= 25 ** 2
    rgb, alpha = blurred_on_white(disc, (0.2, 0.25, 0.4), sigma=1.0)
    truth = alpha >= 0.5
    perimeter = 2 * np.pi * 25
    grown = white_background_mask(rgb).sum() - truth.sum()
    matte = white_background_matte(rgb)
    assert grown > 1.2 * perimeter  # the threshold's silhouette is more than a pixel too wide
    assert abs(int((matte >= 0.5).sum()) - int(truth.sum())) < 0.2 * perimeter
    edge = (alpha > 0.05) & (alpha < 0.95)
    assert np.abs(matte[edge] - alpha[edge]).mean() < 0.03
    assert matte.dtype == np.float32 and matte.min() == 0 and matte.max() == 1


def test_a_wire_keeps_the_thresholds_answer_and_survives_speckle_removal():
    """A wire two pixels wide far from any thick part: not unmixed against the nearest thick part's colour
    (it has no inside of its own to read its colour from) and not erased as speckle (an opening did, and the
    erased wire carved the other views' hull); a blob of a few pixels is speckle and goes."""
    rgb = np.ones((64, 64, 3), np.float32)
    rgb[10:54, 40:42] = (0.5, 0.6, 0.7)  # the wire
    rgb[20:40, 5:25] = (0.1, 0.1, 0.2)  # a thick part of another colour, 15 px away
    rgb[58:60, 4:6] = 0.2  # four pixels of noise
    mask = white_background_mask(rgb)
    assert mask[10:54, 40:42].all() and mask.sum() == 44 * 2 + 20 * 20
    assert (white_background_matte(rgb)[10:54, 40:42] == 1).all()


def test_speckle_removal_keeps_holes_open_and_blobs_apart():
    """Only small blobs go: a ring's hole stays background and two parts a pixel apart stay apart."""
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[12:28, 12:28] = False  # the hole
    mask[5:35, 36:38] = True  # a second part, one pixel of background between them
    cleaned = clean_mask(mask)
    assert np.array_equal(cleaned, mask)
