"""Typed dependencies shared by the routes: the running service, and API-key checks."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, WebSocket

from service.core.errors import ServiceError
from service.state import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def key_is_valid(presented: str | None, keys: list[str]) -> bool:
    """Constant-time comparison against every configured key (no early exit on a match)."""
    if not presented:
        return False
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(presented.encode(), key.encode())
    return ok


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def require_api_key(request: Request, service: ServiceDep) -> None:
    """REST: ``Authorization: Bearer <key>`` when keys are configured."""
    keys = service.settings.keys
    if keys and not key_is_valid(bearer_token(request.headers.get("authorization")), keys):
        raise ServiceError("unauthorized", "send a valid API key as 'Authorization: Bearer <key>'")


def websocket_authorized(websocket: WebSocket, service: Service) -> bool:
    """WebSocket: the same header, or a ``token`` query parameter for clients that cannot set headers."""
    keys = service.settings.keys
    if not keys:
        return True
    tokens = websocket.query_params.getlist("token")
    if len(tokens) > 1:  # ambiguous: never pick one of several presented keys
        return False
    token = bearer_token(websocket.headers.get("authorization")) or (tokens[0] if tokens else None)
    return key_is_valid(token, keys)


ApiKey = Depends(require_api_key)
