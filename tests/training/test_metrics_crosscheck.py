"""Dice and Hausdorff against independent implementations on random shapes.

Dice is recomputed with Python sets of pixel coordinates; the Hausdorff distance with SciPy's
``directed_hausdorff`` (exact nearest-point search) on boundary points found by a plain
neighbour scan, symmetric maximum. Agreement must hold to float tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff

from training import metrics


def random_blob(rng: np.random.Generator, size: int) -> np.ndarray:
    """A few smooth random blobs (possibly several components, holes, touching the border)."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=rng.uniform(2.0, 6.0))
    mask = noise > np.quantile(noise, rng.uniform(0.5, 0.9))
    assert mask.any()
    return mask


def boundary_points(mask: np.ndarray) -> np.ndarray:
    """(N, 2) coordinates of mask pixels with a 4-neighbour outside the mask or the image."""
    h, w = mask.shape
    pts = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if not (0 <= ny < h and 0 <= nx < w) or not mask[ny, nx]:
                pts.append((y, x))
                break
    return np.asarray(pts, dtype=np.float64)


def set_dice(a: np.ndarray, b: np.ndarray) -> float:
    sa = set(zip(*np.nonzero(a), strict=True))
    sb = set(zip(*np.nonzero(b), strict=True))
    return 2.0 * len(sa & sb) / (len(sa) + len(sb))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.31, 0.47)])
def test_dice_and_hausdorff_agree_with_independent_implementations(seed, spacing):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(24, 72))
    pred, gt = random_blob(rng, size), random_blob(rng, size)

    assert metrics.dice(pred, gt) == pytest.approx(set_dice(pred, gt), abs=1e-12)

    scale = np.asarray(spacing)
    pa, pb = boundary_points(pred) * scale, boundary_points(gt) * scale
    expected = max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])
    assert metrics.hausdorff(pred, gt, spacing=spacing) == pytest.approx(expected, rel=1e-9, abs=1e-9)
