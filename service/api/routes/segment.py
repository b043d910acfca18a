"""``POST /v1/segment``: a whole clip in, masks and cardiac read-outs out (JSON, NPZ, MP4, DICOM SEG/SR)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request, Response
from starlette.requests import ClientDisconnect

from service.api.body import read_upload
from service.api.deps import ServiceDep, require
from service.api.schemas import SegmentResult, error_responses
from service.codecs.clip import open_clip
from service.codecs.deflate import inflate_dicom
from service.codecs.dicom_seg import segmentation_dicom
from service.codecs.dicom_source import DICOM_OUTPUTS, read_source
from service.codecs.dicom_sr import report_dicom
from service.codecs.outputs import masks_npz, overlay_mp4
from service.codecs.rle import rle_decode, rle_json_chars
from service.core.audit import audit_state
from service.core.errors import ServiceError
from service.segment import limits_from, model_ref, result_json, segment_upload

log = logging.getLogger(__name__)
T = TypeVar("T")

router = APIRouter(prefix="/v1", tags=["segment"], dependencies=[require("segment")])


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY = {
    "required": True,
    "description": "The clip: the raw body with its Content-Type, or a multipart form with field `file`.",
    "content": {
        "video/x-msvideo": _BINARY,
        "video/mp4": _BINARY,
        "application/dicom": _BINARY,
        "application/x-npy": {**_BINARY, "description": "uint8 (T, H, W) or (T, H, W, 3), C order"},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
    },
}
_ERRORS = error_responses(
    "empty_body",
    "invalid_request",
    "unsupported_media_type",
    "body_timeout",
    "corrupt_input",
    "invalid_metadata",
    "payload_too_large",
    "answer_too_large",
    "too_many_frames",
    "dimensions_too_large",
    "unauthorized",
    "forbidden",
    "overloaded",
    "not_ready",
    "shutting_down",
    "drain_timeout",
    "internal",
)


@router.post(
    "/segment",
    response_model=None,
    summary="Segment a clip",
    description="Masks per frame, the LV area curve, ED/ES frames and EF of an uploaded clip "
    "(AVI, MP4, DICOM cine, NPY); `output=npz` or `output=mp4` for the masks as NPZ or an overlay video; "
    "for a DICOM upload, `output=dicom-seg` for a DICOM Segmentation of the left-ventricle cavity that "
    "references the uploaded instance frame by frame, `output=dicom-sr` for a TID 1500 measurement "
    "report with EDV, ESV and EF per beat and for the clip.",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        200: {
            "model": SegmentResult,
            "description": "The result (`output=json`), the masks as NPZ (`output=npz`: `masks` uint8 "
            "(T, H, W), `area`, `summary` JSON), an H.264 overlay (`output=mp4`), or a DICOM Part 10 "
            "file (`output=dicom-seg`: Segmentation; `output=dicom-sr`: Comprehensive SR, TID 1500)",
            "content": {"application/x-npz": _BINARY, "video/mp4": _BINARY, "application/dicom": _BINARY},
        },
        **_ERRORS,
    },
)
async def segment(
    request: Request,
    service: ServiceDep,
    output: Literal["json", "npz", "mp4", "dicom-seg", "dicom-sr"] = Query(
        "json",
        description="json (RLE masks), npz, mp4 overlay; for DICOM uploads dicom-seg (Segmentation) "
        "or dicom-sr (measurement report)",
    ),
) -> Response:
    s = service.settings
    service.require_ready()
    held = 0

    def hold(n: int) -> None:  # bytes of bodies in memory, all requests together, stay bounded
        nonlocal held
        if service.body_bytes + n > s.max_body_buffer_bytes:
            raise ServiceError(
                "overloaded",
                f"upload bodies in memory would exceed max_body_buffer_mb ({s.max_body_buffer_mb:g})",
            )
        service.body_bytes += n
        held += n

    async with service.track_request():  # the drain waits for it, then cancels it
        try:
            service.body_reads += 1
            try:  # the upload slot is taken only once the whole body is in
                data, media = await read_upload(
                    request, s.max_upload_bytes, s.body_timeout_s, s.body_idle_timeout_s, hold
                )
            finally:
                service.body_reads -= 1
            backend, batcher = service.require_ready()
            if service.uploads >= s.max_uploads:
                raise ServiceError("overloaded", f"{s.max_uploads} uploads are already being processed")
            service.uploads += 1
            try:
                if media == "application/dicom":  # inflated once, under a cap, in the slot and the budget
                    inflated = await asyncio.to_thread(inflate_dicom, data, s.max_upload_bytes)
                    if inflated is not data:
                        hold(len(inflated))
                        data = inflated
                # a DICOM output must be able to reference its source: checked before any inference
                source = None
                if output in DICOM_OUTPUTS:
                    source = await asyncio.to_thread(read_source, data, media, output)
                work = segment_upload(data, media, backend, batcher, s, service.metrics)
                result = await _unless_client_leaves(request, work)
                audit_state(request.scope)["frames"] = result.frames
                return await _respond(result, data, media, output, backend, s, source)
            finally:
                service.uploads -= 1
        finally:
            service.body_bytes -= held


async def _unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first (then ``ClientDisconnect``).

    The body has been read, so the next ASGI message can only be ``http.disconnect``; without
    this, a client that gave up would keep an upload slot and the batcher busy for nothing.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done() and not watch.done():  # we were cancelled ourselves (the drain)
            task.cancel()
        watch.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ClientDisconnect()
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _respond(result, data: bytes, media: str, output: str, backend, settings, source=None) -> Response:
    log.info(
        "segmented a %d-frame clip in %.1f ms (output=%s)", result.frames, result.timings_ms["total"], output
    )
    started = time.perf_counter()
    if output == "npz":
        shape = (result.frames, result.height, result.width)
        body = await asyncio.to_thread(
            masks_npz, result.mask_chunks(), shape, result.areas, result_json(result, backend, masks=False)
        )
        return Response(
            body,
            media_type="application/x-npz",
            headers={
                "Content-Disposition": 'attachment; filename="masks.npz"',
                **_server_timing(result.timings_ms, started),
            },
        )
    if output == "mp4":
        frames = open_clip(data, media, limits_from(settings)).chunks()  # decoded again, chunk by chunk
        body = await asyncio.to_thread(overlay_mp4, frames, result.mask_chunks(), result.fps)
        return Response(
            body,
            media_type="video/mp4",
            headers={
                "Content-Disposition": 'attachment; filename="overlay.mp4"',
                **_server_timing(result.timings_ms, started),
            },
        )
    if output in DICOM_OUTPUTS:
        body = await asyncio.to_thread(_dicom_output, result, output, source, model_ref(backend))
        name = "segmentation.dcm" if output == "dicom-seg" else "report.dcm"
        return Response(
            body,
            media_type="application/dicom",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                **_server_timing(result.timings_ms, started),
            },
        )
    _check_json_size(result, settings.max_json_bytes)
    body = _dumps(result_json(result, backend))
    return Response(body, media_type="application/json", headers=_server_timing(result.timings_ms, started))


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


def _dicom_output(result, output: str, source, model: dict) -> bytes:
    """The DICOM output's bytes. The source's patient and study values were checked by ``read_source``;
    should highdicom still refuse one, its message (which quotes the value) is neither answered
    nor logged: the client gets 422 naming the output, the log the error's type and where it arose."""
    try:
        return _build_dicom_output(result, output, source, model)
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


def _build_dicom_output(result, output: str, source, model: dict) -> bytes:
    if output == "dicom-seg":
        shape = (result.frames, result.height, result.width)
        return segmentation_dicom(source, result.mask_chunks(), shape, model)
    mask_at = lambda i: rle_decode(result.counts[i], result.height, result.width)  # noqa: E731
    return report_dicom(source, result.summary, result.areas, mask_at, result.spacing, model)


def _server_timing(timings_ms: dict[str, float], encode_started: float) -> dict[str, str]:
    """``Server-Timing`` header: the body's stages plus ``encode`` (building the response body)."""
    encode_ms = (time.perf_counter() - encode_started) * 1e3
    parts = [f"{name};dur={ms:.3f}" for name, ms in timings_ms.items()]
    return {"Server-Timing": ", ".join([*parts, f"encode;dur={encode_ms:.3f}"])}


def _dumps(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
