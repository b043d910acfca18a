"""``POST /v1/segment``: a whole clip in, masks and cardiac read-outs out (JSON, NPZ, MP4, DICOM SEG/SR)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request, Response
from starlette.requests import ClientDisconnect

from service.api.body import read_upload
from service.api.deps import ServiceDep, require
from service.api.outputs import OUTPUTS, Answer, Output
from service.api.schemas import SegmentResult, error_responses
from service.codecs.deflate import inflate_dicom
from service.codecs.dicom_source import read_source
from service.core.audit import audit_state
from service.core.errors import ServiceError
from service.segment import limits_from, model_ref, segment_upload

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
OutputName = Literal[tuple(OUTPUTS)]  # the names of service.api.outputs.OUTPUTS
_OUTPUT_HELP = "; ".join(f"`{row.name}`: {row.summary}" for row in OUTPUTS.values())
_OK = {
    "model": SegmentResult,
    "description": "; ".join(f"`output={row.name}`: {row.body}" for row in OUTPUTS.values()),
    "content": {
        media: _BINARY
        for media in dict.fromkeys(row.media_type for row in OUTPUTS.values())
        if media != "application/json"  # the JSON answer's schema is the model's
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
    f"(AVI, MP4, DICOM cine, NPY); `output` chooses the answer: {_OUTPUT_HELP}.",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={200: _OK, **_ERRORS},
)
async def segment(
    request: Request,
    service: ServiceDep,
    output: OutputName = Query("json", description=_OUTPUT_HELP),
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
                row = OUTPUTS[output]
                source = None
                if row.needs_dicom:
                    source = await asyncio.to_thread(read_source, data, media, output)
                work = segment_upload(data, media, backend, batcher, s, service.metrics)
                result = await _unless_client_leaves(request, work)
                audit_state(request.scope)["frames"] = result.frames
                answer = Answer(
                    result, data, media, model_ref(backend), limits_from(s), s.max_json_bytes, source
                )
                return await _respond(answer, row)
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


async def _respond(answer: Answer, output: Output) -> Response:
    """The answer in ``output``'s form, encoded in a worker thread."""
    result = answer.result
    log.info(
        "segmented a %d-frame clip in %.1f ms (output=%s)",
        result.frames,
        result.timings_ms["total"],
        output.name,
    )
    started = time.perf_counter()
    body = await asyncio.to_thread(output.encode, answer)
    headers = {"Content-Disposition": f'attachment; filename="{output.filename}"'} if output.filename else {}
    headers.update(_server_timing(result.timings_ms, started))
    return Response(body, media_type=output.media_type, headers=headers)


def _server_timing(timings_ms: dict[str, float], encode_started: float) -> dict[str, str]:
    """``Server-Timing`` header: the body's stages plus ``encode`` (building the response body)."""
    encode_ms = (time.perf_counter() - encode_started) * 1e3
    parts = [f"{name};dur={ms:.3f}" for name, ms in timings_ms.items()]
    return {"Server-Timing": ", ".join([*parts, f"encode;dur={encode_ms:.3f}"])}
