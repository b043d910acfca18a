"""``POST /v1/segment``: a whole clip in, masks and cardiac read-outs out (JSON, NPZ or MP4)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Literal

from fastapi import APIRouter, Query, Request, Response

from service.api.body import read_upload
from service.api.deps import ApiKey, ServiceDep
from service.codecs.outputs import masks_npz, overlay_mp4
from service.core.errors import ServiceError
from service.segment import result_json, segment_upload

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["segment"], dependencies=[ApiKey])


@router.post("/segment")
async def segment(
    request: Request,
    service: ServiceDep,
    output: Literal["json", "npz", "mp4"] = Query("json", description="json (RLE masks), npz or mp4 overlay"),
) -> Response:
    backend, batcher = service.require_ready()
    if service.uploads >= service.settings.max_uploads:
        raise ServiceError(
            "overloaded", f"{service.settings.max_uploads} uploads are already being processed"
        )
    service.uploads += 1
    try:
        data, media = await read_upload(request, service.settings.max_upload_bytes)
        result = await segment_upload(data, media, backend, batcher, service.settings, service.metrics)
    finally:
        service.uploads -= 1
    t = result.masks.shape[0]
    log.info("segmented a %d-frame clip in %.1f ms (output=%s)", t, result.timings_ms["total"], output)
    if output == "npz":
        body = await asyncio.to_thread(
            masks_npz, result.masks, result.areas, result_json(result, backend) | {"masks": None}
        )
        return Response(
            body,
            media_type="application/x-npz",
            headers={"Content-Disposition": 'attachment; filename="masks.npz"'},
        )
    if output == "mp4":
        body = await asyncio.to_thread(overlay_mp4, result.clip.frames, result.masks, result.clip.fps)
        return Response(
            body,
            media_type="video/mp4",
            headers={"Content-Disposition": 'attachment; filename="overlay.mp4"'},
        )
    return Response(_dumps(result_json(result, backend)), media_type="application/json")


def _dumps(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
