"""Clinical read-outs from LV masks: area curve, ED/ES frames, method-of-discs volumes, EF.

Used by the synthetic generator (true EF), the evaluation (predicted vs reference EF) and the
service (EF of an uploaded clip or a stream). Pure NumPy/SciPy; no model code.

Volumes follow the single-plane method of discs (Simpson's rule): the cavity is cut into
``discs`` slabs perpendicular to its long axis, each taken as a cylinder whose diameter is the
cavity's width there: ``V = sum(pi / 4 * D_i**2) * L / discs``. For a predicted mask the long
axis is the cavity's principal axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.signal import find_peaks

DEFAULT_DISCS = 20


def area_curve(masks: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """``(T, H, W)`` binary masks -> ``(T,)`` areas (pixels, or mm² when spacing is in mm)."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be (T, H, W), got shape {masks.shape}")
    return masks.reshape(masks.shape[0], -1).astype(bool).sum(axis=1) * float(spacing[0] * spacing[1])


def volume_method_of_discs(
    mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0), discs: int = DEFAULT_DISCS
) -> float:
    """Single-plane method-of-discs volume of one ``(H, W)`` mask (pixel³, or mm³ with spacing in mm).

    ``spacing`` is (row, column) size of a pixel.
    """
    ys, xs = np.nonzero(mask)
    if ys.size < 3:
        return 0.0
    pts = np.stack([ys * spacing[0], xs * spacing[1]], axis=1).astype(np.float64)
    pts -= pts.mean(axis=0)
    # Principal axis of the cavity = long axis.
    _, vecs = np.linalg.eigh(pts.T @ pts)
    major, minor = vecs[:, 1], vecs[:, 0]
    a = pts @ major
    b = pts @ minor
    pixel = float(min(spacing))
    lo, hi = a.min() - pixel / 2, a.max() + pixel / 2
    length = hi - lo
    edges = np.linspace(lo, hi, discs + 1)
    which = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, discs - 1)
    volume = 0.0
    for i in range(discs):
        sel = b[which == i]
        if sel.size:
            diameter = sel.max() - sel.min() + pixel
            volume += np.pi / 4.0 * diameter**2
    return float(volume * length / discs)


def ejection_fraction(edv: float, esv: float) -> float:
    """EF in percent: 100 * (EDV - ESV) / EDV."""
    if edv <= 0:
        return float("nan")
    return 100.0 * (edv - esv) / edv


@dataclass
class Beat:
    ed: int
    es: int
    edv: float
    esv: float
    ef: float


@dataclass
class CardiacSummary:
    """ED/ES frames of a clip and the EF per beat and over the clip (NaN where undefined)."""

    ed_frames: list[int] = field(default_factory=list)
    es_frames: list[int] = field(default_factory=list)
    beats: list[Beat] = field(default_factory=list)
    ef: float = float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ef"] = None if np.isnan(self.ef) else round(self.ef, 2)
        for beat in d["beats"]:
            beat["ef"] = None if np.isnan(beat["ef"]) else round(beat["ef"], 2)
        return d


def find_ed_es(areas: np.ndarray, fps: float | None = None) -> tuple[list[int], list[int]]:
    """End-diastolic (area maxima) and end-systolic (area minima) frames of an area curve.

    Peaks must stand out by a third of the curve's range and lie at least a quarter of a
    second apart (assuming 50 fps when the rate is unknown), which rejects speckle jitter
    while allowing heart rates up to 240 bpm.
    """
    areas = np.asarray(areas, dtype=np.float64)
    if areas.size < 3 or np.ptp(areas) == 0:
        return [], []
    smooth = np.convolve(np.pad(areas, 1, mode="edge"), np.ones(3) / 3.0, mode="valid")
    distance = max(2, round((fps or 50.0) * 0.25))
    prominence = np.ptp(smooth) / 3.0
    ed, _ = find_peaks(smooth, distance=distance, prominence=prominence)
    es, _ = find_peaks(-smooth, distance=distance, prominence=prominence)
    return ed.tolist(), es.tolist()


def summarize_clip(
    masks: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0), fps: float | None = None
) -> CardiacSummary:
    """ED/ES frames from the area curve and EF per beat (ED followed by the next ES).

    The clip's EF is the mean over complete beats; a clip without a complete beat falls back to
    its largest and smallest cavity.
    """
    return summarize_areas(area_curve(masks, spacing), lambda i: masks[i], spacing, fps)


def summarize_areas(
    areas: np.ndarray,
    mask_at: Callable[[int], np.ndarray],
    spacing: tuple[float, float] = (1.0, 1.0),
    fps: float | None = None,
) -> CardiacSummary:
    """:func:`summarize_clip` from the area curve, fetching only the masks whose volume enters EF.

    ``mask_at(i)`` returns frame ``i``'s mask; it is called for the ED/ES frames only, so a long
    upload or stream needs its areas plus a few masks, not every mask (the service decodes those
    few back from their RLE or PNG).
    """
    areas = np.asarray(areas, dtype=np.float64)
    ed, es = find_ed_es(areas, fps)

    def volume(i: int) -> float:
        return volume_method_of_discs(mask_at(i), spacing)

    beats: list[Beat] = []
    for i, e in enumerate(ed):
        nxt = ed[i + 1] if i + 1 < len(ed) else len(areas)
        after = [s for s in es if e < s < nxt]
        if not after:
            continue
        s = after[0]
        edv, esv = volume(e), volume(s)
        beats.append(Beat(ed=e, es=s, edv=edv, esv=esv, ef=ejection_fraction(edv, esv)))
    if beats:
        ef = float(np.nanmean([b.ef for b in beats]))
    elif areas.size and np.ptp(areas) > 0:
        ef = ejection_fraction(volume(int(np.argmax(areas))), volume(int(np.argmin(areas))))
    else:
        ef = float("nan")
    return CardiacSummary(ed_frames=ed, es_frames=es, beats=beats, ef=ef)
