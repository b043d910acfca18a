"""``POST /v1/segment``: a whole clip in, masks and cardiac read-outs out (JSON, NPZ, MP4, DICOM SEG/SR).

Two forms share one handler (:func:`_segment`): ``POST /v1/segment`` takes any clip type (its
Content-Type, or a multipart ``file``) and any ``?output=``; the typed operations
``POST /v1/segment/{kind}/{output}``, one per row of :data:`service.api.outputs.OUTPUTS`, take the
clip's bytes in the format the path names and answer one type each, which is what code generators
need to give every call a typed body and a typed answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from enum import Enum
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from service.api.body import OCTET_STREAM, read_upload
from service.api.deps import ServiceDep, require
from service.api.negotiate import preferred
from service.api.outputs import OUTPUTS, Answer, Output
from service.api.schemas import SegmentResult, error_responses
from service.codecs.clip import CLIP_KINDS, ClipKind
from service.codecs.deflate import inflate_dicom
from service.codecs.dicom_source import read_source
from service.core.audit import audit_state
from service.core.errors import ServiceError
from service.segment import limits_from, model_ref, segment_upload

log = logging.getLogger(__name__)
T = TypeVar("T")

router = APIRouter(prefix="/v1", tags=["segment"], dependencies=[require("segment")])


_BINARY = {"type": "string", "format": "binary"}
_REQUEST_BODY = {
    "required": True,
    "description": "The clip: the raw body with its Content-Type, or a multipart form with field `file`.",
    "content": {
        **{
            kind.media_type: {"schema": {**_BINARY, "description": kind.description}}
            for kind in CLIP_KINDS.values()
        },
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"], "properties": {"file": _BINARY}}
        },
    },
}
OutputName = Literal[tuple(OUTPUTS)]  # the names of service.api.outputs.OUTPUTS
# the names of service.codecs.clip.CLIP_KINDS: one schema (components/schemas/ClipKind) for every path
KindName = Enum("ClipKind", {name: name for name in CLIP_KINDS}, type=str)
_OUTPUT_HELP = "; ".join(f"`{row.name}`: {row.summary}" for row in OUTPUTS.values())
_KIND_HELP = "; ".join(f"`{kind.name}`: {kind.description}" for kind in CLIP_KINDS.values())
_OK = {
    "model": SegmentResult,
    "description": "; ".join(f"`output={row.name}`: {row.body}" for row in OUTPUTS.values()),
    "content": {
        media: {"schema": _BINARY}
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
    f"(AVI, MP4, DICOM cine, NPY); `output` chooses the answer: {_OUTPUT_HELP}. Generated clients "
    "are better served by the typed operations `POST /v1/segment/{kind}/{output}`: one request "
    "type and one answer type each.",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={200: _OK, **_ERRORS},
)
async def segment(
    request: Request,
    service: ServiceDep,
    output: OutputName = Query("json", description=_OUTPUT_HELP),
) -> Response:
    row = OUTPUTS[output]
    return await _segment(request, service, row, None, row.media_type)


# -- the typed operations: one per row of OUTPUTS, the clip's format named by the path ----------
# A code generator gives each operation one request type (the clip's bytes as
# application/octet-stream) and one answer type (the row's model, or bytes), which the single
# POST /v1/segment with its five request types and its `output` parameter cannot give it.


def _raw_clip_body(kinds: tuple[str, ...]) -> dict:
    names = ", ".join(f"{CLIP_KINDS[k].media_type} for `{k}`" for k in kinds)
    return {
        "required": True,
        "description": f"The clip's bytes in the format the path names, sent as {OCTET_STREAM} (or "
        f"as the format's own media type: {names}).",
        "content": {OCTET_STREAM: {"schema": _BINARY}},
    }


def _typed_ok(row: Output) -> dict:
    if row.media_type == "application/json":
        return {"model": SegmentResult, "description": row.body}
    return {  # the same bytes under either type: the Accept header chooses, the row's type by default
        "description": f"{row.body} (`{row.media_type}`, or `{OCTET_STREAM}` when Accept asks for it)",
        "content": {row.media_type: {"schema": _BINARY}, OCTET_STREAM: {"schema": _BINARY}},
    }


def _kinds(row: Output) -> tuple[str, ...]:
    """The clip formats an output can be asked of: DICOM alone for a row that references its source."""
    return ("dicom",) if row.needs_dicom else tuple(CLIP_KINDS)


def _add_typed_operation(row: Output) -> None:
    """``POST /v1/segment/{kind}/<row>``, or ``/v1/segment/<the kind>/<row>`` where only one kind fits."""
    kinds = _kinds(row)
    options = {
        "methods": ["POST"],
        "operation_id": "segment_" + row.name.replace("-", "_"),
        "response_model": None,
        "response_class": JSONResponse if row.media_type == "application/json" else Response,
        "summary": f"Segment a clip, answer {row.name}",
        "openapi_extra": {"requestBody": _raw_clip_body(kinds)},
        "responses": {200: _typed_ok(row), **_ERRORS},
    }
    if len(kinds) == 1:
        fixed = CLIP_KINDS[kinds[0]]

        async def one_kind(request: Request, service: ServiceDep) -> Response:
            return await _segment(request, service, row, fixed, _answer_type(request, row))

        router.add_api_route(
            f"/segment/{fixed.name}/{row.name}",
            one_kind,
            description=f"Segments a {fixed.name.upper()} clip and answers {row.body} "
            f"(as `POST /v1/segment?output={row.name}`).",
            **options,
        )
        return

    async def any_kind(
        request: Request,
        service: ServiceDep,
        kind: KindName = Path(description=f"the clip's format: {_KIND_HELP}"),
    ) -> Response:
        return await _segment(request, service, row, CLIP_KINDS[kind.value], _answer_type(request, row))

    router.add_api_route(
        f"/segment/{{kind}}/{row.name}",
        any_kind,
        description=f"Segments a clip in the format the path names and answers {row.body} "
        f"(as `POST /v1/segment?output={row.name}`).",
        **options,
    )


def _answer_type(request: Request, row: Output) -> str:
    """The row's media type, or application/octet-stream where Accept prefers it (binary rows)."""
    if row.media_type == "application/json":
        return row.media_type
    return preferred(request.headers.get("accept"), (row.media_type, OCTET_STREAM))


for _row in OUTPUTS.values():
    _add_typed_operation(_row)


async def _segment(
    request: Request, service: ServiceDep, row: Output, kind: ClipKind | None, answer_type: str
) -> Response:
    """Read the clip (of ``kind``'s format, or as its Content-Type says), segment it, answer ``row``."""
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
                    request,
                    s.max_upload_bytes,
                    s.body_timeout_s,
                    s.body_idle_timeout_s,
                    hold,
                    kind.media_type if kind is not None else None,
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
                if row.needs_dicom:
                    source = await asyncio.to_thread(read_source, data, media, row.name)
                work = segment_upload(data, media, backend, batcher, s, service.metrics)
                result = await _unless_client_leaves(request, work)
                audit_state(request.scope)["frames"] = result.frames
                answer = Answer(
                    result, data, media, model_ref(backend), limits_from(s), s.max_json_bytes, source
                )
                return await _respond(answer, row, answer_type)
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


async def _respond(answer: Answer, output: Output, media_type: str) -> Response:
    """The answer in ``output``'s form, encoded in a worker thread, sent as ``media_type``."""
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
    return Response(body, media_type=media_type, headers=headers)


def _server_timing(timings_ms: dict[str, float], encode_started: float) -> dict[str, str]:
    """``Server-Timing`` header: the body's stages plus ``encode`` (building the response body)."""
    encode_ms = (time.perf_counter() - encode_started) * 1e3
    parts = [f"{name};dur={ms:.3f}" for name, ms in timings_ms.items()]
    return {"Server-Timing": ", ".join([*parts, f"encode;dur={encode_ms:.3f}"])}
