"""Segment a whole uploaded clip in bounded memory: decode, preprocess, infer and encode chunk by chunk.

The clip is never held whole, decoded or as masks. Frames are decoded :data:`CHUNK_FRAMES` at a
time and preprocessed to the model size at once; only the preprocessed frames a pending window
still needs are kept. Each batch of windows goes to the micro-batcher as soon as its look-ahead
frames have arrived, and each mask is brought back to the clip's size, measured (area) and
run-length encoded one frame at a time. ED/ES and EF come from the area curve plus the masks of
the ED/ES frames, decoded back from their RLE (``service.readout.gated_summary``). So a request's peak
memory is its body, one decoded chunk, the in-flight batches and the RLE counts, whatever its
length (docs/performance.md, "Memory").

Real clips: the ultrasound region is chosen once, from the frames the first window needs
(``service.regions.choose_region_judged``: the DICOM region when the file has a valid one, a
stale one rescaled when a factor brings it onto the image, else the fan detected in the frames;
where these and the full frame disagree, the model judges on the first window), and every frame
is cropped to it; masks are mapped back to the clip's pixels. Each frame also gets a confidence
and a flag (``echoseg.quality``), and the clip a ``quality`` block; EF is withheld, with
``ef_null_reason``, when too many frames are flagged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from echoseg.arbitration import first_frames
from echoseg.preprocess import preprocess, window_indices
from echoseg.quality import FrameQuality
from echoseg.region import Region
from service.backends import Backend
from service.batcher import MicroBatcher
from service.codecs.clip import ClipSource, Limits, open_clip
from service.codecs.rle import rle_area, rle_decode, rle_encode
from service.core.config import Settings
from service.core.metrics import Metrics
from service.readout import Readout, gated_summary
from service.regions import choose_region_judged

BATCHES_IN_FLIGHT = 2  # an upload keeps this many batches queued, so streams interleave


@dataclass
class SegmentResult:
    frames: int
    height: int
    width: int
    fps: float | None
    spacing: tuple[float, float] | None
    counts: list[np.ndarray]  # per frame: RLE run lengths (int64), zeros first, row-major
    areas: np.ndarray  # (T,) pixels, or mm² with spacing
    summary: dict
    timings_ms: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    region: Region | None = None
    frame_quality: list[FrameQuality] = field(default_factory=list)
    quality: dict = field(default_factory=dict)

    def mask_chunks(self, size: int = 16) -> Iterator[np.ndarray]:
        """The masks again, ``(n, H, W)`` uint8 {0, 1} a few at a time (for the NPZ/MP4 outputs)."""
        for start in range(0, self.frames, size):
            part = self.counts[start : start + size]
            yield np.stack([rle_decode(c, self.height, self.width) for c in part])


def limits_from(settings: Settings) -> Limits:
    return Limits(
        settings.max_frames,
        settings.max_frame_width,
        settings.max_frame_height,
        settings.max_decoded_bytes,
        settings.max_upload_bytes,  # a deflated DICOM inflates to at most what a plain upload may be
    )


@dataclass
class _Stages:
    decode: float = 0.0
    preprocess: float = 0.0
    queue: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    frame_latencies: list[float] = field(default_factory=list)


def _encode_masks(
    logits: np.ndarray, targets: np.ndarray, height: int, width: int, run: _ClipRun
) -> list[tuple[np.ndarray, FrameQuality]]:
    """``(n, S, S)`` logits and the target frames they saw -> n (RLE counts, quality), one full-size
    mask at a time."""
    readout = run.readout
    return [
        (rle_encode(readout.mask(lg, height, width)), readout.quality(lg, frame))
        for lg, frame in zip(logits, targets, strict=True)
    ]


class _ClipRun:
    """The state of one upload while its chunks flow through the batcher."""

    def __init__(
        self, source: ClipSource, backend: Backend, batcher: MicroBatcher, settings: Settings
    ) -> None:
        self.source = source
        self.config = backend.config
        self.batcher = batcher
        self.settings = settings
        self.limits = settings.quality_thresholds
        self.region_frames = first_frames(self.config.lookahead, settings.region_frames)
        self.loop: asyncio.AbstractEventLoop | None = None  # where the batcher is awaited
        self.region: Region | None = None  # chosen from the first chunk
        self.readout: Readout | None = None  # reads the masks and flags, once the region is known
        self.warnings: list[str] = []
        self.quality: dict[int, FrameQuality] = {}
        self.norm: dict[int, np.ndarray] = {}  # preprocessed frames a pending window still needs
        self.received = 0
        self.next_target = 0
        self.counts: dict[int, np.ndarray] = {}
        self.stages = _Stages()
        self.in_flight: set[asyncio.Task] = set()
        self.slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        self.error: BaseException | None = None

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        chunks = self.source.chunks()
        try:
            while True:
                norm = await asyncio.to_thread(self._next_chunk, chunks)
                if norm is None:
                    break
                for frame in norm:
                    self.norm[self.received] = frame
                    self.received += 1
                await self._submit_until(self.received - self.config.lookahead, total=self.received)
                self._raise_failed()
            await self._submit_until(self.received, total=self.received)
            await asyncio.gather(*self.in_flight)
            self._raise_failed()
        finally:
            for task in self.in_flight:
                task.cancel()

    def _next_chunk(self, chunks: Iterator[np.ndarray]) -> np.ndarray | None:
        """Decode and preprocess the next chunk: ``(n, H, W) uint8 -> (n, S, S) float32``; None at the end."""
        stages = self.stages
        t0 = time.perf_counter()
        chunk = next(chunks, None)
        t1 = time.perf_counter()
        stages.decode += t1 - t0
        if chunk is None:
            return None
        if self.region is None:
            self._choose_region(chunk[: self.region_frames])
        norm = preprocess(chunk, self.config, self.region)
        stages.preprocess += time.perf_counter() - t1
        return norm

    def _choose_region(self, first: np.ndarray) -> None:
        """In a worker thread: the region (judged by the model where candidates disagree) and the
        pixel spacing it justifies."""
        source = self.source
        choice, region, warnings = choose_region_judged(
            first, source.declared_region, source.stale_region, self.batcher, self.loop, self.settings, False
        )
        if choice.scale is not None and source.stale_spacing is not None:
            row, col = source.stale_spacing
            source.spacing = (row / choice.scale, col / choice.scale)
            warnings.append("the pixel spacing of the stale DICOM region is rescaled by the same factor")
        elif choice.stale:
            source.spacing = source.fallback_spacing
            if source.stale_spacing is not None or source.declared_region is not None:
                warnings.append("the pixel spacing of the stale DICOM region is not used")
        self.region, self.warnings = region, warnings
        self.readout = Readout.within(region, self.config, self.limits)

    def _raise_failed(self) -> None:
        if self.error is not None:
            raise self.error

    async def _submit_until(self, upto: int, total: int) -> None:
        """Queue the windows of every target below ``upto`` (their frames have all arrived)."""
        size = self.batcher.max_batch
        while self.next_target < upto:
            targets = range(self.next_target, min(self.next_target + size, upto))
            # windows never reach past ``total - 1`` here, so clamping there is exact
            idx = [window_indices(t, total, self.config) for t in targets]
            windows = np.stack([np.stack([self.norm[i] for i in w]) for w in idx])  # (n, k, S, S)
            self.next_target = targets.stop
            oldest_needed = self.next_target + min(self.config.offsets)
            for i in [i for i in self.norm if i < oldest_needed]:
                del self.norm[i]
            await self.slots.acquire()
            task = asyncio.create_task(self._infer(targets.start, windows))
            self.in_flight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.in_flight.discard(task)
        self.slots.release()
        if not task.cancelled() and task.exception() is not None and self.error is None:
            self.error = task.exception()  # raised by run() at its next step

    async def _infer(self, first: int, windows: np.ndarray) -> None:
        submitted = time.perf_counter()
        result = await self.batcher.submit(windows)  # (n, k, S, S) -> logits (n, S, S)
        waited = time.perf_counter() - submitted
        self.stages.inference += result.inference_s
        self.stages.queue += max(0.0, waited - result.inference_s)
        t0 = time.perf_counter()
        h, w = self.source.height, self.source.width
        targets = windows[:, self.config.offsets.index(0)]  # (n, k, S, S) -> (n, S, S): what each mask is of
        encoded = await asyncio.to_thread(_encode_masks, result.logits, targets, h, w, self)
        post = time.perf_counter() - t0
        self.stages.postprocess += post
        for i, (c, q) in enumerate(encoded):
            self.counts[first + i] = c
            self.quality[first + i] = q
        self.stages.frame_latencies.extend([waited + post] * len(encoded))


async def segment_upload(
    data: bytes,
    media_type: str,
    backend: Backend,
    batcher: MicroBatcher,
    settings: Settings,
    metrics: Metrics,
) -> SegmentResult:
    t0 = time.perf_counter()
    source = await asyncio.to_thread(open_clip, data, media_type, limits_from(settings))
    clip_run = _ClipRun(source, backend, batcher, settings)
    await clip_run.run()
    stages = clip_run.stages
    t_total = clip_run.received
    counts = [clip_run.counts[t] for t in range(t_total)]
    h, w = source.height, source.width
    t1 = time.perf_counter()
    spacing = source.spacing or (1.0, 1.0)
    areas = np.array([rle_area(c) for c in counts], np.float64) * float(spacing[0] * spacing[1])
    per_frame = [clip_run.quality[t] for t in range(t_total)]
    mask_at = lambda i: rle_decode(counts[i], h, w)  # noqa: E731
    limits = settings.quality_thresholds
    summary, quality = await asyncio.to_thread(
        gated_summary, areas, mask_at, per_frame, limits, spacing, source.fps
    )
    for q in per_frame:
        metrics.observe_flag("rest", q.flag)
    stages.postprocess += time.perf_counter() - t1
    for latency in stages.frame_latencies:
        metrics.observe_frame("rest", latency, settings.budget_s)
    ms = {
        "decode": stages.decode,
        "preprocess": stages.preprocess,
        "queue": stages.queue,
        "inference": stages.inference,
        "postprocess": stages.postprocess,
        "total": time.perf_counter() - t0,
    }
    return SegmentResult(
        frames=t_total,
        height=h,
        width=w,
        fps=source.fps,
        spacing=source.spacing,
        counts=counts,
        areas=areas,
        summary=summary,
        timings_ms={k: round(v * 1000, 3) for k, v in ms.items()},
        warnings=[*clip_run.warnings, *source.warnings],
        region=clip_run.region,
        frame_quality=per_frame,
        quality=quality.block(),
    )


def model_ref(backend: Backend) -> dict:
    """The ``model`` block of a result: what the JSON, the NPZ summary and the DICOM outputs name."""
    return {"id": backend.model_id, "preset": backend.config.preset, "backend": backend.name}
