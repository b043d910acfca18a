"""A scanner-like clip built in the test: a fan of moving speckle with a beating dark cavity, inside
a larger frame with static furniture (menu bar, text blocks, depth ticks) and a moving ECG trace."""

from __future__ import annotations

import numpy as np


def fan_mask(height: int, width: int, apex=(0.5, 0.12), half_angle_deg=38.0, radius=0.8) -> np.ndarray:
    """``(H, W)`` bool sector: apex at (x, y) fractions of the frame, radius as a fraction of the height."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    ax, ay = apex[0] * width, apex[1] * height
    r = np.hypot(xx - ax, yy - ay)
    theta = np.degrees(np.arctan2(xx - ax, yy - ay))
    return (r <= radius * height) & (np.abs(theta) <= half_angle_deg) & (yy >= ay)


def cavity_masks(frames: int, height: int, width: int, period: int = 12) -> np.ndarray:
    """``(T, H, W)`` uint8: an ellipse (the "LV") whose size beats."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    out = np.empty((frames, height, width), np.uint8)
    for t in range(frames):
        s = 1.0 + 0.18 * np.sin(2 * np.pi * t / period)
        cx, cy, rx, ry = 0.55 * width, 0.5 * height, 0.07 * width * s, 0.16 * height * s
        out[t] = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    return out


def scanner_clip(
    frames: int = 10, height: int = 240, width: int = 320, seed: int = 0, furniture: bool = True
):
    """``-> (frames (T, H, W) uint8, fan (H, W) bool, cavity masks (T, H, W) uint8)``."""
    rng = np.random.default_rng(seed)
    fan = fan_mask(height, width)
    cavity = cavity_masks(frames, height, width)
    out = np.zeros((frames, height, width), np.uint8)
    text = rng.integers(120, 255, (height, width)).astype(np.uint8)  # the same glyph noise every frame
    for t in range(frames):
        speckle = rng.rayleigh(60.0, (height, width))
        img = np.where(cavity[t] > 0, 0.15 * speckle, speckle)
        img = np.clip(img, 0, 255).astype(np.uint8)
        img[~fan] = 0
        if furniture:
            img[: height // 20, :] = 90  # menu bar
            img[height // 12 : height // 12 + 12, 8:70] = text[:12, 8:70]  # vendor text
            img[height // 12 : height // 12 + 12, width - 80 : width - 10] = text[:12, :70]  # more text
            img[height // 5 : int(0.9 * height) : height // 20, width - 26 : width - 18] = 220  # depth ticks
            x = np.arange(width // 8, width - width // 8)  # an ECG trace that scrolls, and its cursor
            y = (height - 18 + 8 * np.sin(2 * np.pi * (x / 40.0 - t / 6.0))).astype(int)
            img[y, x] = 200
            img[y - 1, x] = 200
            cursor = width // 8 + (7 * t) % (width - width // 4)
            img[height - 30 : height - 6, cursor] = 255
        out[t] = img
    return out, fan, cavity


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
