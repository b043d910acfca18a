"""Read an upload with its size limit enforced while the body streams in (413 at the first excess byte)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.codecs.clip import MEDIA_TYPES, normalize_media_type, sniff_media_type
from service.core.errors import ServiceError


def _too_large(limit: int) -> ServiceError:
    return ServiceError("payload_too_large", f"the body exceeds max_upload_mb ({limit / 2**20:.1f} MiB)")


async def limited_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The request body chunk by chunk, failing as soon as more than ``limit`` bytes arrived."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit)
        yield chunk


async def read_upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The clip's bytes and media type, from a multipart ``file`` field or a raw body."""
    media = normalize_media_type(request.headers.get("content-type"))
    if media != "multipart/form-data":
        data = b"".join([chunk async for chunk in limited_stream(request, limit)])
        return data, media
    parser = MultiPartParser(request.headers, limited_stream(request, limit), max_files=1, max_fields=8)
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
