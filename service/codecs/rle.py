"""Run-length encoding of binary masks, as returned by ``POST /v1/segment``.

Format (also in docs/service.md): the ``(H, W)`` mask is flattened in **row-major** order (row 0
left to right, then row 1, ...); ``counts`` lists the lengths of alternating runs, **starting
with a run of zeros** (which is 0 when the first pixel is set); the counts sum to ``H * W``.
Example: the 2x3 mask ``[[0, 1, 1], [1, 0, 0]]`` flattens to ``0 1 1 1 0 0`` -> ``[1, 3, 2]``.
"""

from __future__ import annotations

import numpy as np


def rle_encode(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` mask (nonzero = set) -> run lengths as an int64 array, zeros first, row-major."""
    flat = np.asarray(mask).reshape(-1) != 0
    if flat.size == 0:
        return np.zeros(0, np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # indices where a new run starts
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).astype(np.int64, copy=False)
    return np.concatenate([np.zeros(1, np.int64), counts]) if flat[0] else counts


def rle_area(counts: np.ndarray) -> int:
    """Set pixels of an RLE mask: the sum of its odd-indexed runs."""
    return int(np.asarray(counts)[1::2].sum())


def rle_json_chars(counts: np.ndarray) -> int:
    """Characters ``counts`` take in a JSON answer (``[c0,c1,...]``), computed without writing them."""
    counts = np.asarray(counts)
    if counts.size == 0:
        return 2
    digits = np.floor(np.log10(np.maximum(counts, 1))).astype(np.int64) + 1
    return int(digits.sum()) + counts.size + 1  # the digits, a comma between each two, two brackets


def rle_decode(counts: list[int], height: int, width: int) -> np.ndarray:
    """Run lengths -> ``(height, width)`` uint8 mask in {0, 1}."""
    if sum(counts) != height * width:
        raise ValueError(f"RLE counts sum to {sum(counts)}, expected {height}*{width} = {height * width}")
    values = np.arange(len(counts)) % 2  # 0, 1, 0, 1, ...
    return np.repeat(values.astype(np.uint8), counts).reshape(height, width)
