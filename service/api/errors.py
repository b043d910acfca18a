"""REST side of the error table: every error leaves as ``{"type":"error","code","detail"}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.core.audit import audit_state
from service.core.errors import ServiceError

log = logging.getLogger(__name__)


def error_response(
    request: Request, err: ServiceError, headers: dict[str, str] | None = None
) -> JSONResponse:
    request.app.state.service.metrics.errors.labels(err.code).inc()
    audit_state(request.scope)["error"] = err.code
    headers = dict(headers or {})
    if err.code == "unauthorized":
        headers["WWW-Authenticate"] = "Bearer"
    if err.http_status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse(err.payload(), status_code=err.http_status, headers=headers or None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(request, ServiceError("invalid_request", where))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        err = ServiceError(code, str(exc.detail))
        resp = error_response(request, err, exc.headers)  # 405 carries Allow
        resp.status_code = exc.status_code
        return resp

    @app.exception_handler(ClientDisconnect)
    async def _client_closed(request: Request, exc: ClientDisconnect) -> JSONResponse:
        log.info("client closed the connection during %s %s", request.method, request.url.path)
        err = ServiceError("client_closed", "the client closed the connection before the answer")
        return error_response(request, err)  # nobody reads it; the status is what is counted

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, ServiceError("internal", "an unexpected server error"))
