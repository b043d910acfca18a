"""Which frames of a clip the model sees for each target frame.

Shared by the datasets, the offline evaluation and the streaming service so that all of them
build exactly the same windows. Frames beyond either end of a clip are replaced by the nearest
existing frame (edge replication).
"""

from __future__ import annotations

import numpy as np

from training.model.config import ModelConfig


def window_indices(t: int, num_frames_in_clip: int, config: ModelConfig) -> list[int]:
    """Indices of the frames (in encoder order) that form the window of target frame ``t``."""
    if num_frames_in_clip < 1:
        raise ValueError("a clip needs at least one frame")
    if not 0 <= t < num_frames_in_clip:
        raise ValueError(f"target frame {t} outside the clip's {num_frames_in_clip} frames")
    last = num_frames_in_clip - 1
    return [min(max(t + o, 0), last) for o in config.offsets]


def clip_windows(frames: np.ndarray, config: ModelConfig) -> np.ndarray:
    """All windows of a clip: ``(T, H, W) -> (T, k, H, W)``, one per target frame."""
    n = frames.shape[0]
    idx = np.array([window_indices(t, n, config) for t in range(n)], dtype=np.int64)  # (T, k)
    return frames[idx]
