"""Bilinear resizing of frame stacks and probability maps: the one resize every path uses.

Below both :mod:`echoseg.region` (which crops, pads and maps back) and :mod:`echoseg.preprocess`
(which normalises and windows), so neither imports the other to reach it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """``(T, H, W) uint8 -> (T, size, size) uint8`` (bilinear). Returns the input if already sized."""
    if frames.ndim != 3:
        raise ValueError(f"frames must be (T, H, W), got shape {frames.shape}")
    if frames.shape[1:] == (size, size):
        return frames
    out = np.empty((frames.shape[0], size, size), dtype=np.uint8)
    for i, f in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR))
    return out


def resize_probabilities(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(T, S, S) float -> (T, height, width) float32`` (bilinear); input already sized is returned."""
    if prob.ndim != 3:
        raise ValueError(f"probabilities must be (T, S, S), got shape {prob.shape}")
    prob = prob.astype(np.float32, copy=False)
    if prob.shape[1:] == (height, width):
        return prob
    out = np.empty((prob.shape[0], height, width), dtype=np.float32)
    for i, p in enumerate(prob):
        out[i] = np.asarray(Image.fromarray(p, mode="F").resize((width, height), Image.BILINEAR))
    return out


def resized_masks(
    prob: np.ndarray,
    height: int,
    width: int,
    threshold: float,
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """``(T, S, S) float probabilities -> (T, height, width) uint8 {0, 1}``: the bilinear resize of the
    probabilities, thresholded, computed in 8 bits.

    ``box`` ``(x0, y0, x1, y1)``, in the map's pixels, is the part of the map brought to
    ``height x width`` (default all of it); it gives the pixels of resizing the whole map to the
    larger size and cropping (up to the rounding of the box's corners), without the larger map.
    """
    if prob.ndim != 3:
        raise ValueError(f"probabilities must be (T, S, S), got shape {prob.shape}")
    # (T, S, S) float -> (T, S, S) uint8, probability in 1/255 steps
    levels = np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    level = np.float32(threshold * 255.0)
    out = np.empty((prob.shape[0], height, width), dtype=np.uint8)
    for i, p in enumerate(levels):
        resized = Image.fromarray(p).resize((width, height), Image.BILINEAR, box=box)  # (height, width)
        np.greater(np.asarray(resized), level, out=out[i])
    return out
