"""Training windows from clips: what the mean-teacher loop consumes.

A *labelled* item is the window of ``k`` frames around a traced frame (edge frames replicated,
see ``echoseg.preprocess``) with that frame's mask. An *unlabelled* item is the window around
a random frame of a clip; each clip gives ``windows_per_video`` of them per epoch, redrawn every
epoch from ``seed + epoch``. Frames are resized to the model's input size and normalised with
its preprocessing; the optional augmentation (flips, rotation ±15°) is drawn per item and epoch
and applied identically to the k frames and the mask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from echoseg.config import ModelConfig
from echoseg.preprocess import normalize, resize_frames, window_indices
from training.data.augment import augment_window
from training.data.clip import Clip

logger = logging.getLogger(__name__)

MODES = ("labelled", "unlabelled")


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` {0, 1} -> ``(size, size)`` {0, 1} (bilinear, then threshold at one half)."""
    if mask.shape == (size, size):
        return mask.astype(np.uint8)
    up = Image.fromarray(mask.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return (np.asarray(up) > 0.5).astype(np.uint8)


class ClipWindowDataset(Dataset):
    """Windows over clips loaded on demand.

    ``names[i]`` and ``traced_frames[i]`` describe clip ``i`` and ``load(i) -> Clip`` decodes it; a
    decoded clip is kept in memory, resized to the input size, after its first use.
    """

    def __init__(
        self,
        names: list[str],
        traced_frames: list[list[int]],
        load: Callable[[int], Clip],
        config: ModelConfig,
        mode: str = "labelled",
        augment: bool = False,
        seed: int = 0,
        windows_per_video: int = 8,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if windows_per_video < 1:
            raise ValueError(f"windows_per_video must be at least 1, got {windows_per_video}")
        self.names = names
        self.config = config
        self.mode = mode
        self.augment = augment
        self.seed = seed
        self.windows_per_video = windows_per_video
        self.epoch = 0
        self._load = load
        self._cache: dict[int, tuple[np.ndarray, dict[int, np.ndarray]]] = {}
        if mode == "labelled":
            self.items = [(i, f) for i, frames in enumerate(traced_frames) for f in frames]
        else:
            self.items = [(i, -1) for i in range(len(names)) for _ in range(windows_per_video)]

    @classmethod
    def from_clips(cls, clips: list[Clip], config: ModelConfig, **kwargs) -> ClipWindowDataset:
        """Windows over clips already in memory (e.g. from ``load_camus``)."""
        return cls(
            [c.name for c in clips], [sorted(c.traced) for c in clips], clips.__getitem__, config, **kwargs
        )

    def set_epoch(self, epoch: int) -> None:
        """Redraw the unlabelled target frames and the augmentations for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def clip(self, i: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Clip ``i`` at the input size: ``(frames (T, S, S) uint8, traced frame -> (S, S) mask)``."""
        if i not in self._cache:
            clip = self._load(i)
            size = self.config.input_size
            masks = {f: resize_mask(m, size) for f, m in clip.traced.items()}
            self._cache[i] = (resize_frames(clip.frames, size), masks)
        return self._cache[i]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i, target = self.items[index]
        frames, masks = self.clip(i)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if target < 0:
            target = int(rng.integers(frames.shape[0]))
        window = frames[window_indices(target, frames.shape[0], self.config)]  # (k, S, S) uint8
        mask = masks[target] if self.mode == "labelled" else None
        if self.augment:
            window, mask = augment_window(window, mask, rng)
        item = {"frames": torch.from_numpy(normalize(window, self.config))}  # (k, S, S) float32
        if mask is not None:
            item["mask"] = torch.from_numpy(mask[None].astype(np.float32))  # (1, S, S)
        return item
