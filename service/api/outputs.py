"""What ``POST /v1/segment`` can answer: one row per ``output``, read by the route, its OpenAPI entries
and ``echoseg segment --output``.

A row names the media type, the file suffix a client saves it under, whether it needs a DICOM
upload to reference, and its encoder: a function of the :class:`Answer` (the segmented clip and
what it came from) to the body's bytes, run in a worker thread. Adding an output is its codec
module plus one row of :data:`OUTPUTS`.
"""

from __future__ import annotations

import json
import logging
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.codecs.clip import Limits, open_clip
from service.codecs.dicom_seg import segmentation_dicom
from service.codecs.dicom_sr import report_dicom
from service.codecs.outputs import masks_npz, overlay_mp4
from service.codecs.rle import rle_decode, rle_json_chars
from service.core.errors import ServiceError

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Output:
    name: str
    media_type: str
    suffix: str  # of the file a client saves the answer in
    needs_dicom: bool  # refused, before any inference, unless the upload is DICOM and referenceable
    encode: Callable[[Answer], bytes]
    summary: str  # for the ``output`` parameter's description
    body: str  # what the 200 answer holds, for its description
    filename: str | None = None  # ``Content-Disposition: attachment`` name; None: answered inline


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


def _json(a: Answer) -> bytes:
    _check_json_size(a.result, a.max_json_bytes)
    body = result_json(a.result, a.model)
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


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


def _npz(a: Answer) -> bytes:
    r = a.result
    summary = result_json(r, a.model, masks=False)
    return masks_npz(r.mask_chunks(), (r.frames, r.height, r.width), r.areas, summary)


def _mp4(a: Answer) -> bytes:
    frames = open_clip(a.data, a.media_type, a.limits).chunks()  # decoded again, chunk by chunk
    return overlay_mp4(frames, a.result.mask_chunks(), a.result.fps)


def _dicom_seg(a: Answer) -> bytes:
    r = a.result
    return _dicom(
        "dicom-seg",
        lambda: segmentation_dicom(a.source, r.mask_chunks(), (r.frames, r.height, r.width), a.model),
    )


def _dicom_sr(a: Answer) -> bytes:
    r = a.result
    mask_at = lambda i: rle_decode(r.counts[i], r.height, r.width)  # noqa: E731
    return _dicom("dicom-sr", lambda: report_dicom(a.source, r.summary, r.areas, mask_at, r.spacing, a.model))


def _dicom(output: str, build: Callable[[], bytes]) -> bytes:
    """A DICOM output's bytes. The source's patient and study values were checked by ``read_source``;
    should highdicom still refuse one, its message (which quotes the value) is neither answered
    nor logged: the client gets 422 naming the output, the log the error's type and where it arose."""
    try:
        return build()
    except ServiceError:
        raise
    except ValueError as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        log.warning(
            "output=%s refused by the DICOM library: %s at %s:%d",
            output,
            type(e).__name__,
            where.filename.rsplit("/", 1)[-1],
            where.lineno,
        )
        raise ServiceError(
            "invalid_metadata",
            f"output={output} could not be built from this file's attributes ({type(e).__name__})",
        ) from None


_ROWS = (
    Output(
        name="json",
        media_type="application/json",
        suffix="json",
        needs_dicom=False,
        encode=_json,
        summary="the result with RLE masks",
        body="the result",
    ),
    Output(
        name="npz",
        media_type="application/x-npz",
        suffix="npz",
        needs_dicom=False,
        encode=_npz,
        summary="the masks as NPZ",
        body="the masks as NPZ (`masks` uint8 (T, H, W), `area`, `summary` JSON)",
        filename="masks.npz",
    ),
    Output(
        name="mp4",
        media_type="video/mp4",
        suffix="mp4",
        needs_dicom=False,
        encode=_mp4,
        summary="the masks over the clip as a video",
        body="an H.264 overlay",
        filename="overlay.mp4",
    ),
    Output(
        name="dicom-seg",
        media_type="application/dicom",
        suffix="seg.dcm",
        needs_dicom=True,
        encode=_dicom_seg,
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
        encode=_dicom_sr,
        summary="for a DICOM upload, a TID 1500 measurement report with EDV, ESV and EF per beat and "
        "for the clip",
        body="a DICOM Part 10 Comprehensive SR (TID 1500)",
        filename="report.dcm",
    ),
)
OUTPUTS: dict[str, Output] = {row.name: row for row in _ROWS}
DICOM_OUTPUTS = tuple(name for name, row in OUTPUTS.items() if row.needs_dicom)
