"""An uploaded clip through the micro-batcher: its windows in chunks, its logits back.

Both transports build exactly the windows of offline inference (``echoseg.preprocess``: frames
resized to the model size and normalised, windows with edge replication, sigmoid, probabilities
resized back to the clip's size, thresholded); this module batches an upload's windows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from echoseg.config import ModelConfig
from echoseg.preprocess import window_indices
from service.batcher import MicroBatcher

UPLOAD_CHUNKS_IN_FLIGHT = 2  # an upload keeps this many chunks queued, so streams interleave


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
