"""Segmentation and EF metrics on hand-made masks with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import metrics


def square(size: int = 64, top: int = 10, left: int = 10, side: int = 20) -> np.ndarray:
    m = np.zeros((size, size), dtype=np.uint8)
    m[top : top + side, left : left + side] = 1
    return m


def disc(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


# -- Dice --------------------------------------------------------------------------------------


def test_dice_of_half_overlapping_squares_is_one_half():
    a = square(top=10, left=10, side=10)
    b = square(top=15, left=10, side=10)  # shares 5 of its 10 rows
    assert metrics.dice(a, b) == pytest.approx(0.5)


def test_dice_identical_disjoint_and_empty():
    a = square()
    assert metrics.dice(a, a) == 1.0
    assert metrics.dice(a, square(top=40, left=40, side=10)) == 0.0
    empty = np.zeros_like(a)
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.dice(a, empty) == 0.0


def test_dice_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.dice(np.zeros((4, 4)), np.zeros((4, 5)))


# -- Hausdorff ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("dy", "dx"), [(0, 5), (7, 0), (3, 4), (-6, 8)])
def test_hausdorff_of_offset_squares_equals_the_offset(dy, dx):
    a = square(top=20, left=20)
    b = square(top=20 + dy, left=20 + dx)
    expected = math.hypot(dy, dx)
    assert metrics.hausdorff(a, b) == pytest.approx(expected)
    assert metrics.hausdorff(b, a) == pytest.approx(expected)
    assert metrics.hausdorff(a, b, percentile=100) == pytest.approx(expected)


def test_hausdorff_in_mm_scales_with_spacing():
    a = square(top=20, left=20)
    b = square(top=23, left=20)  # 3 rows lower
    assert metrics.hausdorff(a, b) == pytest.approx(3.0)
    assert metrics.hausdorff(a, b, spacing=(0.5, 0.5)) == pytest.approx(1.5)
    # Anisotropic: only the row size matters for a vertical shift.
    assert metrics.hausdorff(a, b, spacing=(2.0, 0.3)) == pytest.approx(6.0)


def test_hd95_ignores_a_stray_pixel_that_dominates_hd():
    gt = disc(96, 48, 48, 20)
    pred = gt.copy()
    pred[2, 2] = 1  # one false positive far from the cavity
    far = math.hypot(48 - 2, 48 - 2) - 20
    assert metrics.hausdorff(pred, gt) == pytest.approx(far, abs=1.0)
    assert metrics.hausdorff(pred, gt, percentile=95) < 1.0
    assert metrics.hausdorff(pred, gt, percentile=95) <= metrics.hausdorff(pred, gt)


def test_hausdorff_of_empty_masks():
    a = square()
    empty = np.zeros_like(a)
    assert math.isnan(metrics.hausdorff(a, empty))
    assert math.isnan(metrics.hausdorff(empty, a, percentile=95))
    assert metrics.hausdorff(empty, empty) == 0.0
    assert metrics.hausdorff(a, a) == 0.0


def test_hausdorff_rejects_bad_arguments():
    a = square()
    with pytest.raises(ValueError, match="spacing"):
        metrics.hausdorff(a, a, spacing=(0.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        metrics.hausdorff(a, a, percentile=101)


def test_boundary_of_a_square_is_its_outline():
    a = square(side=5)
    edge = metrics.boundary(a)
    assert edge.sum() == 16  # 5x5 square: 25 pixels minus the 3x3 interior
    assert not edge[11:14, 11:14].any()


# -- pixel AUC ---------------------------------------------------------------------------------


def test_auc_of_perfect_inverted_and_constant_predictors():
    gt = disc(64, 32, 32, 12)
    assert metrics.pixel_auc(gt.astype(np.float32), gt) == 1.0
    assert metrics.pixel_auc(1.0 - gt, gt) == 0.0
    assert metrics.pixel_auc(np.full(gt.shape, 0.3), gt) == pytest.approx(0.5)


def test_auc_of_a_random_predictor_is_near_one_half():
    rng = np.random.default_rng(0)
    gt = disc(128, 64, 64, 30)
    auc = metrics.pixel_auc(rng.random(gt.shape), gt)
    assert abs(auc - 0.5) < 0.02


def test_auc_matches_pairwise_counting_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(5):
        prob = rng.integers(0, 5, size=(9, 9)) / 4.0  # many ties
        gt = rng.random((9, 9)) < 0.4
        pos, neg = prob[gt], prob[~gt]
        wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        assert metrics.pixel_auc(prob, gt) == pytest.approx(wins / (pos.size * neg.size))


def test_auc_is_nan_when_reference_has_one_class():
    assert math.isnan(metrics.pixel_auc(np.random.rand(8, 8), np.zeros((8, 8))))
    assert math.isnan(metrics.pixel_auc(np.random.rand(8, 8), np.ones((8, 8))))


# -- EF ----------------------------------------------------------------------------------------


def test_ef_from_masks_of_shrinking_ellipse():
    yy, xx = np.mgrid[:112, :112]
    ed = ((yy - 56) / 40.0) ** 2 + ((xx - 56) / 20.0) ** 2 <= 1
    es = ((yy - 56) / 34.0) ** 2 + ((xx - 56) / 14.0) ** 2 <= 1
    ef = metrics.ef_from_masks(ed, es)
    # A prolate ellipsoid's volume ~ L * D^2: 1 - (68*28^2)/(80*40^2) ≈ 58 %.
    assert 50.0 < ef < 66.0
    assert metrics.ef_from_masks(ed, ed) == pytest.approx(0.0)
    assert math.isnan(metrics.ef_from_masks(np.zeros_like(ed), es))


def test_ef_agreement_bias_std_and_correlation():
    ref = np.array([30.0, 45.0, 55.0, 60.0, 70.0])
    stats = metrics.ef_agreement(ref + 2.0, ref)
    assert stats["bias"] == pytest.approx(2.0)
    assert stats["std"] == pytest.approx(0.0, abs=1e-12)
    assert stats["corr"] == pytest.approx(1.0)
    assert stats["mae"] == pytest.approx(2.0)
    assert stats["n"] == 5

    noisy = ref + np.array([1.0, -1.0, 3.0, -3.0, 0.0])
    stats = metrics.ef_agreement(noisy, ref)
    assert stats["bias"] == pytest.approx(0.0)
    assert stats["std"] == pytest.approx(np.std([1, -1, 3, -3, 0], ddof=1))
    assert stats["corr"] == pytest.approx(np.corrcoef(noisy, ref)[0, 1])


def test_ef_agreement_skips_and_counts_undefined_pairs():
    stats = metrics.ef_agreement([50.0, float("nan"), 60.0], [52.0, 40.0, float("nan")])
    assert stats["n"] == 1 and stats["n_undefined"] == 2
    assert stats["bias"] == pytest.approx(-2.0)
    assert stats["corr"] is None and stats["std"] is None


def test_summarize_counts_nan():
    s = metrics.summarize([1.0, 3.0, float("nan")])
    assert s["n"] == 2 and s["n_undefined"] == 1
    assert s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0)
    assert metrics.summarize([])["mean"] is None
