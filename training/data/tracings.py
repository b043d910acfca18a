"""LV masks from EchoNet-Dynamic tracings, built the way echonet-dynamic builds them.

Each traced frame has one row for the long axis followed by chords across the cavity; the mask is
the polygon through the chords' first endpoints (apex to base) and back through their second
endpoints: ``x = [X1[1:], reversed X2[1:]]``, ``y`` likewise, coordinates rounded to the nearest
pixel and filled with ``skimage.draw.polygon`` semantics (pixel centres inside the polygon or on
its boundary), implemented here without scikit-image.
"""

from __future__ import annotations

import numpy as np


def polygon_mask(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fill the polygon with vertices ``(rows[i], cols[i])``: ``-> (H, W) uint8`` {0, 1}.

    A pixel is set when its centre lies inside the polygon (even-odd crossing rule) or on one of
    its edges, as scikit-image's ``draw.polygon`` does; parts outside ``shape`` are clipped.
    """
    r = np.asarray(rows, dtype=np.float64)
    c = np.asarray(cols, dtype=np.float64)
    height, width = shape
    mask = np.zeros((height, width), dtype=np.uint8)
    if r.size < 3:
        return mask
    r0, r1 = max(0, int(np.floor(r.min()))), min(height - 1, int(np.ceil(r.max())))
    c0, c1 = max(0, int(np.floor(c.min()))), min(width - 1, int(np.ceil(c.max())))
    if r0 > r1 or c0 > c1:
        return mask
    rr, cc = np.mgrid[r0 : r1 + 1, c0 : c1 + 1].astype(np.float64)  # pixel centres of the bounding box
    inside = np.zeros(rr.shape, dtype=bool)
    on_edge = np.zeros(rr.shape, dtype=bool)
    for i in range(r.size):
        j = i - 1  # previous vertex (wraps to the last one)
        ri, rj, ci, cj = r[i], r[j], c[i], c[j]
        if ri != rj:
            spans = (ri <= rr) != (rj <= rr)
            crossing = (cj - ci) * (rr - ri) / (rj - ri) + ci
            inside ^= spans & (cc < crossing)
        cross = (cj - ci) * (rr - ri) - (rj - ri) * (cc - ci)
        within = (
            (rr >= min(ri, rj) - 1e-9)
            & (rr <= max(ri, rj) + 1e-9)
            & (cc >= min(ci, cj) - 1e-9)
            & (cc <= max(ci, cj) + 1e-9)
        )
        on_edge |= within & (np.abs(cross) <= 1e-7 * max(1.0, abs(cj - ci) + abs(rj - ri)))
    mask[r0 : r1 + 1, c0 : c1 + 1] = inside | on_edge
    return mask


def tracing_polygon(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 4)`` rows of (X1, Y1, X2, Y2), first row the long axis -> polygon ``(x, y)`` vertices."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"tracing rows must be (N, 4) X1, Y1, X2, Y2; got shape {coords.shape}")
    x1, y1, x2, y2 = coords[1:].T
    x = np.concatenate([x1, x2[::-1]])
    y = np.concatenate([y1, y2[::-1]])
    return x, y


def tracing_mask(coords: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mask of one traced frame from its ``(N, 4)`` tracing rows: ``-> (height, width) uint8`` {0, 1}."""
    x, y = tracing_polygon(coords)
    return polygon_mask(np.rint(y), np.rint(x), (height, width))
