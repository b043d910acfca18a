"""Training windows from clips: what the mean-teacher loop consumes.

A *labelled* item is the window of ``k`` frames around a traced frame (edge frames replicated,
see ``echoseg.preprocess``) with that frame's mask. An *unlabelled* item is the window around
a random frame of a clip; each clip gives ``windows_per_video`` of them per epoch, redrawn every
epoch from ``seed + epoch``. Where a source has per-frame truth (the simulators), a labelled set
can also draw ``true_windows_per_video`` windows per clip and epoch around random frames, with that
frame's true mask: labels between ED and ES too (e.g. with the mitral valve open), which the
paper's ED/ES tracings never give. Only the window's k frames are read (from a frame store, or from clips
already in memory); they are brought to the model's input size exactly as the service does
(``echoseg.region``: cropped to the clip's ultrasound region, blanked outside the fan, padded to
square, resized; a clip whose image fills the frame, like EchoNet's 112x112 crops, is simply
resized) and normalised with its preprocessing, and the optional augmentation (flips, rotation
±15°) is drawn per item and epoch and applied identically to the k frames and the mask. The only
thing kept per process is each clip's region (a box and a polygon), detected once from its first
frames.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from echoseg.config import ModelConfig
from echoseg.preprocess import normalize, window_indices
from echoseg.region import DETECT_FRAMES, Region, apply_region, choose_region, mask_to_input
from training.data.augment import FLIPS, augment_window, check_flips
from training.data.base import normalise_split
from training.data.clip import Clip
from training.data.store import FrameStore, ensure_store

logger = logging.getLogger(__name__)

MODES = ("labelled", "unlabelled")


class WindowDataset(Dataset):
    """Windows over clips; subclasses say how to read a clip's frames and traced masks.

    ``names[i]``, ``traced_frames[i]`` and ``num_frames[i]`` describe clip ``i``.
    """

    def __init__(
        self,
        names: list[str],
        traced_frames: list[list[int]],
        num_frames: list[int],
        config: ModelConfig,
        mode: str = "labelled",
        augment: bool = False,
        seed: int = 0,
        windows_per_video: int = 8,
        flips: str = FLIPS,
        true_windows_per_video: int = 0,
        has_true: list[bool] | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if windows_per_video < 1:
            raise ValueError(f"windows_per_video must be at least 1, got {windows_per_video}")
        if true_windows_per_video < 0:
            raise ValueError(f"true_windows_per_video must be at least 0, got {true_windows_per_video}")
        self.names = names
        self.num_frames = num_frames
        self.config = config
        self.mode = mode
        check_flips(flips)
        self.augment = augment
        self.flips = flips
        self.seed = seed
        self.windows_per_video = windows_per_video
        self.epoch = 0
        self._regions: dict[int, Region] = {}
        if mode == "labelled":
            self.items = [(i, f) for i, frames in enumerate(traced_frames) for f in frames]
            # Windows around a frame drawn per epoch (target -1), labelled with its true mask.
            with_truth = [i for i in range(len(names)) if has_true and has_true[i]]
            self.items += [(i, -1) for i in with_truth for _ in range(true_windows_per_video)]
        else:
            self.items = [(i, -1) for i in range(len(names)) for _ in range(windows_per_video)]

    def read_frames(self, i: int, indices: list[int]) -> np.ndarray:
        """Frames ``indices`` of clip ``i`` at its native size: ``(k, H, W) uint8``."""
        raise NotImplementedError

    def read_mask(self, i: int, frame: int) -> np.ndarray:
        """The traced mask of ``frame`` of clip ``i`` at its native size: ``(H, W)`` {0, 1}."""
        raise NotImplementedError

    def read_true_mask(self, i: int, frame: int) -> np.ndarray:
        """The true mask of any ``frame`` of clip ``i`` (sources with per-frame truth): ``(H, W)`` {0, 1}."""
        raise NotImplementedError

    def region(self, i: int) -> Region:
        """Clip ``i``'s ultrasound region, detected once from its first frames (as the service does)."""
        if i not in self._regions:
            first = self.read_frames(i, list(range(min(DETECT_FRAMES, self.num_frames[i]))))
            self._regions[i] = choose_region(first)[0]
        return self._regions[i]

    def set_epoch(self, epoch: int) -> None:
        """Redraw the unlabelled target frames and the augmentations for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def item_key(self, index: int) -> tuple[str, int]:
        """``(clip name, traced frame)`` of a labelled item, ``(clip name, -1)`` of one whose frame is
        drawn per epoch (unlabelled, or labelled with per-frame truth)."""
        i, target = self.items[index]
        return self.names[i], target

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i, target = self.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        drawn = target < 0
        if drawn:
            target = int(rng.integers(self.num_frames[i]))
        size = self.config.input_size
        indices = window_indices(target, self.num_frames[i], self.config)
        region = self.region(i)
        window = apply_region(self.read_frames(i, indices), region, size)  # (k, H, W) -> (k, S, S) uint8
        mask = None
        if self.mode == "labelled":
            native = self.read_true_mask(i, target) if drawn else self.read_mask(i, target)
            mask = mask_to_input(native, region, size)
        if self.augment:
            window, mask = augment_window(window, mask, rng, self.flips)
        item = {
            "frames": torch.from_numpy(normalize(window, self.config)),  # (k, S, S) float32
            "index": torch.tensor(index),  # which item: names a window in logs and tests
        }
        if mask is not None:
            item["mask"] = torch.from_numpy(mask[None].astype(np.float32))  # (1, S, S)
        return item


class ClipWindowDataset(WindowDataset):
    """Windows over clips already in memory (e.g. from ``load_camus``)."""

    def __init__(self, clips: list[Clip], config: ModelConfig, **kwargs):
        self.clips = clips
        names = [c.name for c in clips]
        super().__init__(
            names,
            [sorted(c.traced) for c in clips],
            [len(c.frames) for c in clips],
            config,
            has_true=[c.true_masks is not None for c in clips],
            **kwargs,
        )

    @classmethod
    def from_clips(cls, clips: list[Clip], config: ModelConfig, **kwargs) -> ClipWindowDataset:
        return cls(clips, config, **kwargs)

    def read_frames(self, i: int, indices: list[int]) -> np.ndarray:
        return self.clips[i].frames[indices]

    def read_mask(self, i: int, frame: int) -> np.ndarray:
        return self.clips[i].traced[frame]

    def read_true_mask(self, i: int, frame: int) -> np.ndarray:
        return self.clips[i].true_masks[frame]


class StoreWindowDataset(WindowDataset):
    """Windows over the clips of one split of a frame store (``training.data.store``)."""

    def __init__(
        self, store: FrameStore, split: str | None, config: ModelConfig, mode: str = "labelled", **kwargs
    ):
        names = store.names(split)
        if mode == "labelled":
            names = [n for n in names if store.records[n].traced]
        records = [store.records[n] for n in names]
        traced = [list(r.traced) for r in records]
        num_frames = [r.num_frames for r in records]
        has_true = [r.has_true for r in records]
        super().__init__(names, traced, num_frames, config, mode=mode, has_true=has_true, **kwargs)
        self.store = store

    def read_frames(self, i: int, indices: list[int]) -> np.ndarray:
        return self.store.read_frames(self.names[i], indices)

    def read_mask(self, i: int, frame: int) -> np.ndarray:
        return self.store.traced_mask(self.names[i], frame)

    def read_true_mask(self, i: int, frame: int) -> np.ndarray:
        return self.store.true_mask(self.names[i], frame)


class EchoNetDataset(StoreWindowDataset):
    """Labelled or unlabelled training windows from an EchoNet-Dynamic folder or its frame store.

    ``root`` is the dataset folder (its frame store, ``store`` or the default cache folder, is
    prepared on first use and refreshed when the source changed) or a prepared store. Each window
    reads its k frames from the store; nothing is kept in memory per video.
    """

    def __init__(
        self,
        root,
        split: str | None,
        config: ModelConfig,
        mode: str = "labelled",
        augment: bool = False,
        seed: int = 0,
        windows_per_video: int = 8,
        store=None,
    ):
        frame_store = ensure_store(root, store, progress=False)
        super().__init__(
            frame_store,
            split,
            config,
            mode=mode,
            augment=augment,
            seed=seed,
            windows_per_video=windows_per_video,
        )
        logger.info(
            "%s %s windows from %d videos (%s)",
            len(self),
            mode,
            len(self.names),
            normalise_split(split) or "all",
        )
