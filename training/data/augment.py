"""The paper's augmentations, applied identically to every frame of a window and to its mask.

Horizontal, vertical and diagonal (transpose) flips, each with probability 1/2, and a rotation
by an angle drawn uniformly in ±15°. ``flips`` narrows the flips a training may use: apical views
always show the apex at the top of the sector and only the left-right display convention varies
between scanners, so the apical four-chamber recipe keeps the horizontal flip alone (``"h"``);
the paper's set (``"hvt"``) suits its square, orientation-free synthetic clips.
Frames are interpolated bilinearly, the mask by nearest neighbour so it stays binary; pixels
rotated in from outside the image are black (as outside an ultrasound sector) and background for
the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ROTATION_DEG = 15.0
FLIPS = "hvt"  # horizontal, vertical, transpose


@dataclass(frozen=True)
class Augmentation:
    hflip: bool = False
    vflip: bool = False
    transpose: bool = False
    angle: float = 0.0  # degrees, counter-clockwise

    @classmethod
    def draw(
        cls, rng: np.random.Generator, max_rotation: float = MAX_ROTATION_DEG, flips: str = FLIPS
    ) -> Augmentation:
        """A random augmentation; the random stream is the same whatever ``flips`` allows."""
        check_flips(flips)
        drawn = rng.random(3) < 0.5
        h, v, t = (bool(d) and name in flips for d, name in zip(drawn, FLIPS, strict=True))
        return cls(h, v, t, float(rng.uniform(-max_rotation, max_rotation)))

    def apply(self, images: np.ndarray, order: int = 1) -> np.ndarray:
        """``(N, H, W)`` -> ``(N, H, W)`` (``(N, W, H)`` if transposed and not square); same dtype.

        ``order`` 1 (bilinear) for frames, 0 (nearest) for masks.
        """
        if images.ndim != 3:
            raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
        out = images
        if self.hflip:
            out = out[:, :, ::-1]
        if self.vflip:
            out = out[:, ::-1, :]
        if self.transpose:
            out = out.transpose(0, 2, 1)
        if self.angle:
            from scipy.ndimage import rotate  # imported here so the config can check flips cheaply

            dtype = out.dtype
            rotated = rotate(
                out.astype(np.float32), self.angle, axes=(2, 1), reshape=False, order=order, cval=0.0
            )
            if np.issubdtype(dtype, np.integer):
                rotated = np.clip(np.rint(rotated), np.iinfo(dtype).min, np.iinfo(dtype).max)
            out = rotated.astype(dtype)
        return np.ascontiguousarray(out)


def check_flips(flips: str) -> None:
    if not isinstance(flips, str) or set(flips) - set(FLIPS):
        raise ValueError(
            f"flips must be letters of {FLIPS!r} (h: horizontal, v: vertical, t: transpose), got {flips!r}"
        )


def augment_window(
    frames: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, flips: str = FLIPS
) -> tuple[np.ndarray, np.ndarray | None]:
    """One random augmentation applied to ``frames (k, H, W)`` and ``mask (H, W)`` alike."""
    aug = Augmentation.draw(rng, flips=flips)
    frames = aug.apply(frames, order=1)
    if mask is not None:
        mask = aug.apply(mask[None], order=0)[0]
    return frames, mask
