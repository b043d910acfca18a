"""Read an upload with its size limit and its timeouts enforced while the body streams in.

413 at the first excess byte; 408 ``body_timeout`` when the whole body takes longer than
``body_timeout_s`` or no byte arrives for ``body_idle_timeout_s``. A client that goes away
mid-body raises starlette's ``ClientDisconnect``, which the error handlers count as
``client_closed`` (499), not as a server error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.codecs.clip import MEDIA_TYPES, normalize_media_type, sniff_media_type
from service.core.errors import ServiceError

OCTET_STREAM = "application/octet-stream"


def _too_large(limit: int) -> ServiceError:
    return ServiceError("payload_too_large", f"the body exceeds max_upload_mb ({limit / 2**20:.1f} MiB)")


async def limited_stream(
    request: Request,
    limit: int,
    total_s: float = float("inf"),
    idle_s: float = float("inf"),
    hold: Callable[[int], None] | None = None,
) -> AsyncGenerator[bytes, None]:
    """The request body chunk by chunk, failing on the first excess byte or a missed deadline.

    ``hold(n)`` is told of every ``n`` bytes before they are kept (it may refuse by raising).
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    seen = 0
    deadline = time.monotonic() + total_s
    chunks = request.stream().__aiter__()
    while True:
        left = deadline - time.monotonic()
        wait = min(idle_s, left)
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), wait if wait > 0 else 0)
        except StopAsyncIteration:
            return
        except TimeoutError:
            which = "total" if left <= idle_s else "idle"
            limit_s = total_s if which == "total" else idle_s
            raise ServiceError(
                "body_timeout",
                f"the request body did not arrive in time ({which} limit {limit_s:g} s, "
                f"{seen} bytes received)",
            ) from None
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit)
        if hold is not None:
            hold(len(chunk))
        yield chunk


async def read_upload(
    request: Request,
    limit: int,
    total_s: float = float("inf"),
    idle_s: float = float("inf"),
    hold: Callable[[int], None] | None = None,
    kind: str | None = None,
) -> tuple[bytes, str]:
    """The clip's bytes and media type, from a multipart ``file`` field or a raw body.

    ``kind`` (a media type) is the format an operation's path names: the body is then that
    format's raw bytes, sent as ``application/octet-stream``, as ``kind`` itself, or without a
    Content-Type (which HTTP reads as octet-stream); any other type is refused before the body is read.
    """
    media = normalize_media_type(request.headers.get("content-type"))
    if kind is not None:
        if media not in ("", OCTET_STREAM, kind):
            raise ServiceError(
                "unsupported_media_type",
                f"this operation takes the clip as {OCTET_STREAM} or {kind}, not {media!r}",
            )
        media = kind
    body = limited_stream(request, limit, total_s, idle_s, hold)
    if media != "multipart/form-data":
        data = b"".join([chunk async for chunk in body])
        return data, media
    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise ServiceError("invalid_request", f"malformed multipart body: {e.message}") from None
    try:
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise ServiceError("invalid_request", "multipart uploads need the clip in a field named 'file'")
        data = await part.read()
        part_media = normalize_media_type(part.content_type)
    finally:
        await form.close()
    if part_media not in MEDIA_TYPES:  # browsers send application/octet-stream; look at the bytes
        part_media = sniff_media_type(data) or part_media
    return data, part_media
