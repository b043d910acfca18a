"""The clip record every loader in ``training.data`` returns (EchoNet-Dynamic, CAMUS, synthetic)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Clip:
    """One echo clip with its labels, as every loader in ``training.data`` returns it.

    ``traced`` maps the traced frames to their masks; ``ed``/``es`` are -1 when the clip has fewer
    than two traced frames. ``true_masks`` is the full per-frame ground truth when the dataset
    has it (synthetic data, CAMUS half sequences). ``spacing`` is the (row, column) pixel size in mm,
    (1.0, 1.0) when unknown.
    """

    name: str
    frames: np.ndarray  # (T, H, W) uint8
    fps: float
    ef: float
    split: str
    traced: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (H, W) uint8
    ed: int = -1
    es: int = -1
    true_masks: np.ndarray | None = None  # (T, H, W) uint8
    spacing: tuple[float, float] = (1.0, 1.0)
