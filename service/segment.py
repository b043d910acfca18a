"""Segment a whole uploaded clip: decode, preprocess, batch, postprocess, read out ED/ES and EF."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from echoseg.cardiac import area_curve, summarize_clip
from echoseg.preprocess import logits_to_masks, preprocess
from service.backends import Backend
from service.batcher import MicroBatcher
from service.codecs.clip import DecodedClip, Limits, decode_clip
from service.codecs.rle import rle_encode
from service.core.config import Settings
from service.core.metrics import Metrics
from service.pipeline import infer_clip


@dataclass
class SegmentResult:
    clip: DecodedClip
    masks: np.ndarray  # (T, H, W) uint8 {0, 1}
    areas: np.ndarray  # (T,)
    summary: dict
    timings_ms: dict[str, float]


def limits_from(settings: Settings) -> Limits:
    return Limits(settings.max_frames, settings.max_frame_width, settings.max_frame_height)


def _postprocess(
    logits: np.ndarray, clip: DecodedClip, backend: Backend
) -> tuple[np.ndarray, np.ndarray, dict]:
    _, h, w = clip.frames.shape
    masks = logits_to_masks(logits, h, w, backend.config)  # (T, S, S) -> (T, H, W)
    spacing = clip.spacing or (1.0, 1.0)
    areas = area_curve(masks, spacing)
    summary = summarize_clip(masks, spacing, clip.fps).to_dict()
    return masks, areas, summary


async def segment_upload(
    data: bytes,
    media_type: str,
    backend: Backend,
    batcher: MicroBatcher,
    settings: Settings,
    metrics: Metrics,
) -> SegmentResult:
    t0 = time.perf_counter()
    clip = await asyncio.to_thread(decode_clip, data, media_type, limits_from(settings))
    t1 = time.perf_counter()
    norm = await asyncio.to_thread(preprocess, clip.frames, backend.config)  # (T, H, W) -> (T, S, S)
    t2 = time.perf_counter()
    logits, timings = await infer_clip(norm, backend.config, batcher)
    t3 = time.perf_counter()
    masks, areas, summary = await asyncio.to_thread(_postprocess, logits, clip, backend)
    t4 = time.perf_counter()
    post = t4 - t3
    for latency in timings.frame_latencies:
        metrics.observe_frame(
            "rest", latency + post / max(1, len(timings.frame_latencies)), settings.budget_s
        )
    ms = {
        "decode": t1 - t0,
        "preprocess": t2 - t1,
        "queue": timings.queue_s,
        "inference": timings.inference_s,
        "postprocess": post,
        "total": t4 - t0,
    }
    return SegmentResult(clip, masks, areas, summary, {k: round(v * 1000, 3) for k, v in ms.items()})


def result_json(result: SegmentResult, backend: Backend) -> dict:
    """The JSON body of ``POST /v1/segment`` (documented field by field in docs/service.md)."""
    clip = result.clip
    t, h, w = result.masks.shape
    mm = clip.spacing is not None
    return {
        "model": {"id": backend.model_id, "preset": backend.config.preset, "backend": backend.name},
        "frames": t,
        "height": h,
        "width": w,
        "fps": clip.fps,
        "spacing": {"row": clip.spacing[0], "col": clip.spacing[1], "unit": "mm"} if mm else None,
        "masks": {
            "encoding": "rle",
            "order": "row-major",
            "first_run": 0,
            "size": [h, w],
            "counts": [rle_encode(m) for m in result.masks],
        },
        "area": [round(float(a), 3) for a in result.areas],
        "area_unit": "mm2" if mm else "pixel",
        "volume_unit": "mm3" if mm else "pixel3",
        **result.summary,
        "timings_ms": result.timings_ms,
    }
