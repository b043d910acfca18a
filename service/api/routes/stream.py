"""``/v1/stream``: real-time segmentation over WebSocket (protocol in docs/service.md)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from service.stream import StreamSession

router = APIRouter(prefix="/v1", tags=["stream"])


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    await StreamSession(websocket, websocket.app.state.service).run()
