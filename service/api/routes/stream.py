"""``/v1/stream``: real-time segmentation over WebSocket (protocol in docs/service.md)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from service.api.deps import websocket_principal
from service.core.errors import ServiceError
from service.stream import StreamSession

router = APIRouter(prefix="/v1", tags=["stream"])


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    """Authenticate the caller (the ``Authorization`` header or a ``token`` query parameter), then
    hand the stream and its principal to a session; a refused caller hears why from the session."""
    service = websocket.app.state.service
    try:
        principal = websocket_principal(websocket, service, "stream")
    except ServiceError as refused:
        await StreamSession(websocket, service).run(refused)
        return
    await StreamSession(websocket, service, principal).run()
