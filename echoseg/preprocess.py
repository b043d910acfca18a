"""Preprocessing shared by training, evaluation, export checks, the benchmarks and the service.

Frames are uint8 grayscale. The network sees them resized to ``input_size`` (bilinear), scaled
to [0, 1] and normalised with the preset's mean/std; its masks are brought back to the clip's
size by resizing the probability map (bilinear) and thresholding it there. The service's masks
(:func:`logits_to_masks`) take that resize in 8 bits (:func:`resized_masks`): probabilities
rounded to 1/255 and resized by Pillow's integer path, several times faster than a float resize
of a scanner-size frame; only pixels whose interpolated probability lies within about 1/255 of the
threshold can differ from the float form (:func:`resize_probabilities`, still the reference).

Windows: which frames the model sees for each target frame, the same for a whole clip
(:func:`clip_windows`) and for a stream (:class:`StreamWindows`). Frames beyond either end of a
clip are replaced by the nearest existing frame (edge replication).

Real clips: given a :class:`echoseg.region.Region` (the ultrasound image region of a scanner's
frame), :func:`preprocess` crops to it, blanks outside the fan, pads to square and resizes, and
:func:`logits_to_masks` maps the probabilities back to the source frame (``echoseg.region``). A
full region (an already cropped clip) and ``region=None`` are the plain resize above.
"""

from __future__ import annotations

import numpy as np

from echoseg.config import ModelConfig
from echoseg.region import Region, apply_region, map_back_masks
from echoseg.resize import resize_frames, resized_masks  # also served from here


def normalize(frames: np.ndarray, config: ModelConfig) -> np.ndarray:
    """uint8 frames of any shape -> float32 ``(x / 255 - mean) / std``."""
    x = frames.astype(np.float32) * (1.0 / 255.0)
    return (x - np.float32(config.mean)) * np.float32(1.0 / config.std)


def probabilities_to_masks(prob: np.ndarray, height: int, width: int, threshold: float) -> np.ndarray:
    """``(T, S, S) float probabilities -> (T, height, width) uint8 {0, 1}`` masks at the clip's size."""
    return resized_masks(prob, height, width, threshold)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def preprocess(frames: np.ndarray, config: ModelConfig, region: Region | None = None) -> np.ndarray:
    """``(T, H, W) uint8 -> (T, S, S) float32`` normalised (cropped to ``region`` when given)."""
    if region is None:
        return normalize(resize_frames(frames, config.input_size), config)
    return normalize(apply_region(frames, region, config.input_size), config)


def logits_to_masks(
    logits: np.ndarray, height: int, width: int, config: ModelConfig, region: Region | None = None
) -> np.ndarray:
    """``(T, S, S)`` logits -> ``(T, height, width)`` uint8 {0, 1} masks (mapped back from ``region``)."""
    prob = sigmoid(logits.astype(np.float32))
    if region is None:
        return probabilities_to_masks(prob, height, width, config.threshold)
    if (region.height, region.width) != (height, width):
        raise ValueError(f"the region is for {region.width}x{region.height} frames, not {width}x{height}")
    return map_back_masks(prob, region, config.threshold)


# -- windows -----------------------------------------------------------------------------------
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


class StreamWindows:
    """Turns a stream of preprocessed frames into the windows of its target frames, in order.

    Frame ``n`` arriving makes target ``n - lookahead`` computable; windows reaching before
    frame 0 replicate frame 0, and on :meth:`finish` the last ``lookahead`` targets replicate
    the last frame, exactly as :func:`window_indices` does for a whole clip. Only the last k
    frames are kept, so a stream's memory does not grow with its length.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.received = 0
        self.emitted = 0
        self._frames: dict[int, np.ndarray] = {}  # the last k frames, by index

    def push(self, frame: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add frame ``(S, S)``; returns ``[(target, window (k, S, S))]`` now computable."""
        n = self.received
        self._frames[n] = frame
        self._frames.pop(n - self.config.num_frames, None)
        self.received += 1
        target = n - self.config.lookahead
        if target < 0:
            return []
        return [(target, self._window(target, last=n))]

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """Windows of the targets still waiting for look-ahead frames (the stream has ended)."""
        last = self.received - 1
        pending = range(self.emitted, self.received)
        return [(t, self._window(t, last=last)) for t in pending]

    def _window(self, target: int, last: int) -> np.ndarray:
        self.emitted = target + 1
        idx = [min(max(target + o, 0), last) for o in self.config.offsets]
        return np.stack([self._frames[i] for i in idx])  # k x (S, S) -> (k, S, S)


def random_windows(config: ModelConfig, count: int, seed: int = 0) -> np.ndarray:
    """Random uint8 frames, normalised like real ones: ``(count, k, S, S) float32``."""
    rng = np.random.default_rng(seed)
    size = config.input_size
    frames = rng.integers(0, 256, size=(count, config.num_frames, size, size), dtype=np.uint8)
    return normalize(frames, config)
