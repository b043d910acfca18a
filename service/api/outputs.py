"""What ``POST /v1/segment`` can answer: one row per ``output``, read by the route, its OpenAPI entries
and ``echoseg segment --output``.

A row names the media type, the file suffix a client saves it under, whether it needs a DICOM
upload to reference, and its encoder: a function of the :class:`Answer` (the segmented clip and
what it came from) to the body's bytes, run in a worker thread, named by import path and imported
when first asked for (so ``echoseg segment --help`` reads the table without loading the codecs).
Adding an output is its codec module (with its encoder) plus one row of :data:`OUTPUTS`.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.codecs.rle import rle_json_chars
from service.core.errors import ServiceError

if TYPE_CHECKING:  # the clip codec loads the region code (scipy): not for reading the table
    from service.codecs.clip import Limits


@dataclass(frozen=True)
class Answer:
    """What an encoder may read: the result, the upload it came from, and the limits that apply."""

    result: Any  # service.segment.SegmentResult
    data: bytes  # the upload (inflated, for a deflated DICOM)
    media_type: str
    model: dict  # the ``model`` block (service.segment.model_ref)
    limits: Limits  # for decoding the upload again (the overlay)
    max_json_bytes: int
    source: Any = None  # the DICOM header (service.codecs.dicom_source.read_source) when the row needs one

    def json(self, *, masks: bool = True) -> dict:
        """The JSON answer (:func:`result_json`); without masks, the NPZ's ``summary``."""
        return result_json(self.result, self.model, masks=masks)


@dataclass(frozen=True)
class Output:
    name: str
    media_type: str
    suffix: str  # of the file a client saves the answer in
    needs_dicom: bool  # refused, before any inference, unless the upload is DICOM and referenceable
    encoder: str  # "module:function" of ``Answer -> bytes``, imported when the output is first asked for
    summary: str  # for the ``output`` parameter's description
    body: str  # what the 200 answer holds, for its description
    filename: str | None = None  # ``Content-Disposition: attachment`` name; None: answered inline

    def load_encoder(self) -> Callable[[Answer], bytes]:
        module, _, name = self.encoder.partition(":")
        return getattr(importlib.import_module(module), name)

    def encode(self, answer: Answer) -> bytes:
        return self.load_encoder()(answer)


def result_json(result, model: dict, *, masks: bool = True) -> dict:
    """The JSON body of ``POST /v1/segment`` (documented field by field in docs/service.md)."""
    h, w = result.height, result.width
    mm = result.spacing is not None
    return {
        "model": model,
        "frames": result.frames,
        "height": h,
        "width": w,
        "fps": result.fps if result.fps is None or math.isfinite(result.fps) else None,
        "spacing": {"row": result.spacing[0], "col": result.spacing[1], "unit": "mm"} if mm else None,
        "masks": {
            "encoding": "rle",
            "order": "row-major",
            "first_run": 0,
            "size": [h, w],
            "counts": [c.tolist() for c in result.counts],
        }
        if masks
        else None,
        "area": [round(float(a), 3) for a in result.areas],
        "area_unit": "mm2" if mm else "pixel",
        "volume_unit": "mm3" if mm else "pixel3",
        **result.summary,
        "region": result.region.to_dict() if result.region is not None else None,
        "confidence": [q.confidence for q in result.frame_quality],
        "flags": [q.flag for q in result.frame_quality],
        "quality": result.quality,
        "warnings": result.warnings,
        "timings_ms": result.timings_ms,
    }


def json_answer(a: Answer) -> bytes:
    _check_json_size(a.result, a.max_json_bytes)
    return json.dumps(a.json(), separators=(",", ":"), allow_nan=False).encode()


def _check_json_size(result, max_bytes: int) -> None:
    """Refuse a JSON answer longer than ``max_bytes`` before any of it is built (its RLE counts are
    measured, not written: a clip of many large frames can make an answer hundreds of times its upload)."""
    per_frame = 64  # area, confidence and flag of a frame, with their separators
    size = sum(rle_json_chars(c) for c in result.counts) + per_frame * result.frames + 16384
    if size > max_bytes:
        raise ServiceError(
            "answer_too_large",
            f"the JSON answer would be about {size / 2**20:.1f} MiB ({result.frames} frames of "
            f"{result.width}x{result.height}), above max_json_mb ({max_bytes / 2**20:g} MiB); ask for "
            "output=npz (the masks as arrays, with the same summary) or send a shorter clip",
        )


_ROWS = (
    Output(
        name="json",
        media_type="application/json",
        suffix="json",
        needs_dicom=False,
        encoder="service.api.outputs:json_answer",
        summary="the result with RLE masks",
        body="the result",
    ),
    Output(
        name="npz",
        media_type="application/x-npz",
        suffix="npz",
        needs_dicom=False,
        encoder="service.codecs.outputs:npz_answer",
        summary="the masks as NPZ",
        body="the masks as NPZ (`masks` uint8 (T, H, W), `area`, `summary` JSON)",
        filename="masks.npz",
    ),
    Output(
        name="mp4",
        media_type="video/mp4",
        suffix="mp4",
        needs_dicom=False,
        encoder="service.codecs.outputs:mp4_answer",
        summary="the masks over the clip as a video",
        body="an H.264 overlay",
        filename="overlay.mp4",
    ),
    Output(
        name="dicom-seg",
        media_type="application/dicom",
        suffix="seg.dcm",
        needs_dicom=True,
        encoder="service.codecs.dicom_seg:segmentation_answer",
        summary="for a DICOM upload, a DICOM Segmentation of the left-ventricle cavity that references "
        "the uploaded instance frame by frame",
        body="a DICOM Part 10 Segmentation",
        filename="segmentation.dcm",
    ),
    Output(
        name="dicom-sr",
        media_type="application/dicom",
        suffix="sr.dcm",
        needs_dicom=True,
        encoder="service.codecs.dicom_sr:report_answer",
        summary="for a DICOM upload, a TID 1500 measurement report with EDV, ESV and EF per beat and "
        "for the clip",
        body="a DICOM Part 10 Comprehensive SR (TID 1500)",
        filename="report.dcm",
    ),
)
OUTPUTS: dict[str, Output] = {row.name: row for row in _ROWS}
DICOM_OUTPUTS = tuple(name for name, row in OUTPUTS.items() if row.needs_dicom)
