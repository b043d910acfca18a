"""From frames to masks: the preprocessing, batching and postprocessing shared by REST and streams.

Both transports build exactly the windows of offline inference
(``training.model.inference.predict_clip``): frames resized to the model size and normalised
(``training.model.preprocessing``), windows with edge replication (``training.model.window``),
sigmoid, probabilities resized back to the clip's size, thresholded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from service.batcher import MicroBatcher
from training.model.config import ModelConfig
from training.model.preprocessing import normalize, probabilities_to_masks, resize_frames, sigmoid
from training.model.window import window_indices

UPLOAD_CHUNKS_IN_FLIGHT = 2  # an upload keeps this many chunks queued, so streams interleave


def preprocess(frames: np.ndarray, config: ModelConfig) -> np.ndarray:
    """``(T, H, W) uint8 -> (T, S, S) float32`` normalised."""
    return normalize(resize_frames(frames, config.input_size), config)


def logits_to_masks(logits: np.ndarray, height: int, width: int, config: ModelConfig) -> np.ndarray:
    """``(T, S, S)`` logits -> ``(T, height, width)`` uint8 {0, 1} masks."""
    return probabilities_to_masks(sigmoid(logits.astype(np.float32)), height, width, config.threshold)


@dataclass
class ClipTimings:
    queue_s: float = 0.0
    inference_s: float = 0.0
    frame_latencies: list[float] = field(default_factory=list)


async def infer_clip(
    norm: np.ndarray, config: ModelConfig, batcher: MicroBatcher
) -> tuple[np.ndarray, ClipTimings]:
    """All target frames of a preprocessed clip ``(T, S, S)`` -> logits ``(T, S, S)``.

    The clip goes to the batcher in chunks of ``max_batch`` windows with at most
    ``UPLOAD_CHUNKS_IN_FLIGHT`` queued at a time. ``inference_s`` sums the backend time of the
    batches that carried this clip; ``queue_s`` is the rest of the time spent in the batcher.
    """
    t_total = norm.shape[0]
    chunk = batcher.max_batch
    starts = list(range(0, t_total, chunk))
    out = np.empty((t_total, config.input_size, config.input_size), np.float32)
    timings = ClipTimings()
    sem = asyncio.Semaphore(UPLOAD_CHUNKS_IN_FLIGHT)

    async def run(start: int) -> None:
        async with sem:
            stop = min(start + chunk, t_total)
            idx = [window_indices(t, t_total, config) for t in range(start, stop)]
            submitted = time.perf_counter()
            result = await batcher.submit(norm[np.asarray(idx)])  # (n, k, S, S) -> (n, S, S)
            out[start:stop] = result.logits
            timings.inference_s += result.inference_s
            timings.frame_latencies.extend([time.perf_counter() - submitted] * (stop - start))

    began = time.perf_counter()
    await asyncio.gather(*(run(s) for s in starts))
    timings.queue_s = max(0.0, time.perf_counter() - began - timings.inference_s)
    return out, timings


class StreamWindows:
    """Turns a stream of preprocessed frames into the windows of its target frames, in order.

    Frame ``n`` arriving makes target ``n - lookahead`` computable; windows reaching before
    frame 0 replicate frame 0, and on :meth:`finish` the last ``lookahead`` targets replicate
    the last frame, exactly as ``window_indices`` does for a whole clip.
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
