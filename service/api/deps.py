"""Typed dependencies shared by the routes: the running service, and who is calling with which scope.

A caller is a :class:`~service.core.keys.Principal`: the id of a valid API key (``Authorization:
Bearer``, or ``?token=`` on WebSockets), or the subject of a verified client certificate (mutual
TLS), or ``anonymous`` when the server has no keys. A presented key that is wrong is refused even
when a certificate was verified; a certificate holds ``client_cert_scopes``. The principal is
kept in the request's audit slots, so the audit line and the ``X-Key-Id`` header name it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from service.core.audit import audit_state
from service.core.errors import ServiceError
from service.core.keys import ANONYMOUS, Principal
from service.core.tls import client_certificate
from service.state import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def identify(conn: HTTPConnection, service: Service, allow_query_token: bool) -> Principal:
    """Who is calling; raises ``unauthorized`` when keys are configured and none valid was shown."""
    ring = service.keys
    if ring.locked:  # every key was removed from the key file: nobody, not even a certificate
        raise ServiceError("unauthorized", "the server's key file holds no keys: no caller is accepted")
    peer = client_certificate(conn.scope)
    if peer is not None and service.tls is not None and service.tls.is_denied(peer):
        raise ServiceError(
            "unauthorized", "this client certificate was revoked (it is on the server's ssl_client_denylist)"
        )
    tokens = conn.query_params.getlist("token") if allow_query_token else []
    if len(tokens) > 1:  # ambiguous: never pick one of several presented keys
        raise ServiceError("unauthorized", "send one API key, not several 'token' parameters")
    token = bearer_token(conn.headers.get("authorization")) or (tokens[0] if tokens else None)
    if token:
        principal = ring.authenticate(token)
        if principal is None:
            raise ServiceError("unauthorized", "the API key is not valid (unknown, removed or mistyped)")
        return principal
    if peer is not None:
        return Principal("cert", peer.subject, frozenset(service.settings.cert_scopes), peer.sha256)
    if ring.enabled:
        where = "'Authorization: Bearer <key>'" + (" or ?token=<key>" if allow_query_token else "")
        raise ServiceError("unauthorized", f"send a valid API key as {where}")
    return ANONYMOUS


def authorize(
    conn: HTTPConnection, service: Service, scope: str | None, allow_query_token: bool
) -> Principal:
    """:func:`identify`, then check ``scope`` (``forbidden`` when the caller lacks it)."""
    principal = identify(conn, service, allow_query_token)
    audit_state(conn.scope)["principal"] = principal
    if scope is not None and scope not in principal.scopes:
        raise ServiceError(
            "forbidden", f"{principal.name} may not use this route: it needs the '{scope}' scope"
        )
    return principal


BEARER = HTTPBearer(
    scheme_name="bearer",
    description=(
        "An API key as `Authorization: Bearer <key>` (`ECHOSEG_API_KEYS` or `ECHOSEG_API_KEY_FILE`; each key "
        "holds scopes). A server started without keys accepts anonymous calls; one that verifies "
        "client certificates (mutual TLS) also accepts a certificate in place of a key."
    ),
    auto_error=False,  # the service's own check (authorize) answers with its typed 401/403 bodies
)
"""Declares the bearer scheme on every route that :func:`require` guards, so that the OpenAPI
document (and the clients generated from it) say how to authenticate; it reads nothing itself."""


def require(scope: str | None):
    """A REST dependency: a valid key (or certificate) holding ``scope`` (None: any valid caller)."""

    def dependency(
        request: Request, service: ServiceDep, _declared: Annotated[object, Depends(BEARER)]
    ) -> Principal:
        return authorize(request, service, scope, allow_query_token=False)

    return Depends(dependency)


def websocket_principal(websocket: WebSocket, service: Service, scope: str) -> Principal:
    """WebSocket: the same header, or a ``token`` query parameter for clients that cannot set headers."""
    return authorize(websocket, service, scope, allow_query_token=True)


ApiKey = require(None)
