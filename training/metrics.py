"""Segmentation and clinical metrics: Dice, Hausdorff distance (HD, HD95), pixel AUC, EF agreement.

These are the figures the paper reports (Wu et al. 2022, §4.2) and that ``echoseg eval`` writes:

- **Dice** ``2|A∩B| / (|A| + |B|)`` of a predicted mask A and a reference mask B. Two empty masks
  agree perfectly (1.0); one empty mask against a non-empty one scores 0.0.
- **Hausdorff distance** between the *boundaries* of A and B: the largest distance from a
  boundary pixel of either mask to the nearest boundary pixel of the other. **HD95** replaces
  each directed maximum by its 95th percentile (then takes the larger of the two directions,
  as MONAI does), which ignores a few stray pixels. Distances are in pixels, or in mm when
  ``spacing`` (row, column pixel size in mm) is given. A boundary pixel is a mask pixel with at
  least one 4-neighbour outside the mask (pixels on the image border count as boundary).
  When exactly one mask is empty the distance is undefined and returned as NaN — aggregates
  count these separately (``n_undefined``); two empty masks are at distance 0.
- **Pixel AUC**: area under the ROC curve of per-pixel probabilities against the reference
  mask, i.e. the probability that a random cavity pixel scores higher than a random background
  pixel (ties count half). NaN when the reference has only one class.
- **EF agreement**: Pearson correlation, bias (mean of predicted − reference) and the standard
  deviation of the differences, over clips whose EFs are both finite.

Pure NumPy/SciPy; no model code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

from echoseg.cardiac import ejection_fraction, volume_method_of_discs

_CROSS = ndimage.generate_binary_structure(2, 1)


def _as_bool_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and reference differ in shape: {pred.shape} vs {gt.shape}")
    if pred.ndim != 2:
        raise ValueError(f"masks must be 2-D (H, W), got shape {pred.shape}")
    return pred, gt


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient of two ``(H, W)`` binary masks; 1.0 when both are empty."""
    pred, gt = _as_bool_pair(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, gt).sum()) / total


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a ``(H, W)`` mask: mask pixels with a 4-neighbour outside it."""
    mask = np.asarray(mask).astype(bool)
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def directed_boundary_distances(
    src: np.ndarray, dst: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """Distance from every boundary pixel of ``src`` to the nearest boundary pixel of ``dst``.

    Both masks must be non-empty. Returns a 1-D array (pixels, or mm with ``spacing`` in mm).
    """
    src_edge, dst_edge = boundary(src), boundary(dst)
    # Euclidean distance of every pixel to the nearest dst boundary pixel (a zero of ~dst_edge).
    field = ndimage.distance_transform_edt(~dst_edge, sampling=tuple(float(s) for s in spacing))
    return field[src_edge]


def hausdorff(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: tuple[float, float] = (1.0, 1.0),
    percentile: float | None = None,
) -> float:
    """Symmetric boundary Hausdorff distance of two ``(H, W)`` masks (``percentile=95`` gives HD95).

    NaN when exactly one mask is empty, 0.0 when both are.
    """
    return hausdorff_percentiles(pred, gt, spacing, (100.0 if percentile is None else percentile,))[0]


def hausdorff_percentiles(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: tuple[float, float] = (1.0, 1.0),
    percentiles: tuple[float, ...] = (100.0, 95.0),
) -> tuple[float, ...]:
    """Several Hausdorff percentiles from one pair of distance transforms (100 = HD, 95 = HD95)."""
    pred, gt = _as_bool_pair(pred, gt)
    if len(spacing) != 2 or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing must be two positive (row, column) sizes, got {spacing}")
    if any(not 0.0 <= float(q) <= 100.0 for q in percentiles):
        raise ValueError(f"percentile must lie in [0, 100] or be None, got {percentiles}")
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if not has_pred and not has_gt:
        return tuple(0.0 for _ in percentiles)
    if has_pred != has_gt:
        return tuple(float("nan") for _ in percentiles)
    d_pg = directed_boundary_distances(pred, gt, spacing)
    d_gp = directed_boundary_distances(gt, pred, spacing)
    return tuple(float(max(np.percentile(d_pg, q), np.percentile(d_gp, q))) for q in percentiles)


def pixel_auc(prob: np.ndarray, gt: np.ndarray) -> float:
    """ROC AUC of per-pixel probabilities against a binary reference (Mann–Whitney U with mid-ranks).

    NaN when the reference is all cavity or all background.
    """
    prob = np.asarray(prob, dtype=np.float64).ravel()
    gt = np.asarray(gt).astype(bool).ravel()
    if prob.shape != gt.shape:
        raise ValueError(f"probabilities and reference differ in size: {prob.size} vs {gt.size}")
    n_pos = int(gt.sum())
    n_neg = gt.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(prob)  # average ranks for ties: a tie counts half
    u = ranks[gt].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def ef_from_masks(
    ed_mask: np.ndarray, es_mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)
) -> float:
    """EF (%) from single-plane method-of-discs volumes of an ED and an ES mask (NaN if EDV is 0)."""
    edv = volume_method_of_discs(np.asarray(ed_mask).astype(bool), spacing)
    esv = volume_method_of_discs(np.asarray(es_mask).astype(bool), spacing)
    return ejection_fraction(edv, esv)


def ef_agreement(predicted: Iterable[float], reference: Iterable[float]) -> dict[str, float | int | None]:
    """Pearson correlation, bias (mean predicted − reference), std of the differences, MAE.

    Pairs where either EF is NaN are left out and counted in ``n_undefined``. Values that cannot
    be computed (fewer than two pairs, constant input) are None.
    """
    p = np.asarray(list(predicted), dtype=np.float64)
    r = np.asarray(list(reference), dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"need one predicted EF per reference EF, got {p.size} and {r.size}")
    ok = np.isfinite(p) & np.isfinite(r)
    p, r = p[ok], r[ok]
    diff = p - r
    out: dict[str, float | int | None] = {
        "n": int(ok.sum()),
        "n_undefined": int((~ok).sum()),
        "corr": None,
        "bias": _finite_or_none(diff.mean()) if diff.size else None,
        "std": _finite_or_none(diff.std(ddof=1)) if diff.size > 1 else None,
        "mae": _finite_or_none(np.abs(diff).mean()) if diff.size else None,
    }
    if p.size >= 2 and p.std() > 0 and r.std() > 0:
        out["corr"] = _finite_or_none(np.corrcoef(p, r)[0, 1])
    return out


def summarize(values: Iterable[float]) -> dict[str, float | int | None]:
    """Mean, std (ddof=0), median, min, max over the finite values; NaNs counted as ``n_undefined``."""
    v = np.asarray(list(values), dtype=np.float64)
    finite = v[np.isfinite(v)]
    out: dict[str, float | int | None] = {"n": int(finite.size), "n_undefined": int(v.size - finite.size)}
    reducers = {"mean": np.mean, "std": np.std, "median": np.median, "min": np.min, "max": np.max}
    for name, fn in reducers.items():
        out[name] = _finite_or_none(fn(finite)) if finite.size else None
    return out


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
