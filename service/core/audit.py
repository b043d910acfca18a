"""The audit trail: one JSON line per API request and per stream, on a logger (or file) of its own.

Fields (docs/service.md, "Audit trail"): ``time`` (UTC, ISO 8601), ``event`` (``request`` |
``stream``), ``principal`` (key id, ``cert:<subject>`` or ``anonymous``), ``auth`` (``key`` |
``cert`` | ``none``), ``tls``, ``method``, ``route`` (the route template, never the raw path),
``status`` (HTTP status, or the stream's close code), ``outcome`` (``ok`` | ``error`` |
``client_closed``), ``error`` (the error code or null), ``bytes_in``, ``frames``, ``duration_ms``,
``model_id``. Nothing else: no pixels, no file names, no query strings, no DICOM fields, no
client addresses, no keys. Rotation is the platform's (the file is reopened when it is moved,
as logrotate does).

The trail fails closed: when its file cannot be written (the disk is full, its folder was
removed or remounted read-only), :meth:`AuditTrail.check` says so before work is taken, the
service refuses API requests and new streams (``audit_on_failure=refuse``, the default) or only
reports not ready, and an error is logged; both end as soon as the file can be written again.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import time
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.keys import Principal
from service.core.logging import RedactSecrets

AUDIT_LOGGER = "echoseg.audit"
FIELDS = (
    "time", "event", "principal", "auth", "tls", "method", "route", "status", "outcome", "error",
    "bytes_in", "frames", "duration_ms", "model_id",
)  # fmt: skip
SKIPPED_ROUTES = ("/healthz", "/readyz")  # probes: every few seconds, no data


log = logging.getLogger(__name__)


class _TrailFile(logging.handlers.WatchedFileHandler):
    """The trail's file; a line it cannot write is noted (``failed``), not printed as a traceback."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:  # reopening a moved file happens before the base class's own error handling
            super().emit(record)
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed = True
        self.stream = None  # reopened at the next line


class AuditTrail:
    """Writes audit lines to ``path`` (a file of its own) or, when empty, to the ``echoseg.audit`` logger."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.ok = True  # the last write (or check) of the file succeeded
        self.handler: _TrailFile | None = None
        if path:
            try:  # refuse to start without a writable trail, rather than lose lines later
                with open(path, "a", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise OSError(f"audit_log {path}: cannot append to it ({exc.strerror})") from None
            # not registered in the logging tree: its lines reach this file only
            self.logger = logging.Logger(AUDIT_LOGGER, logging.INFO)
            self.handler = _TrailFile(path, encoding="utf-8", delay=True)
            self.handler.setFormatter(logging.Formatter("%(message)s"))
            self.handler.addFilter(RedactSecrets())
            self.logger.addHandler(self.handler)
        else:
            self.logger = logging.getLogger(AUDIT_LOGGER)
            self.logger.setLevel(logging.INFO)

    def record(self, event: str, principal: Principal, **fields) -> None:
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event": event,
            "principal": principal.name,
            "auth": principal.kind,
            **{k: fields.get(k) for k in FIELDS[4:]},
        }
        unknown = set(fields) - set(FIELDS)
        assert not unknown, f"not an audit field: {unknown}"
        self.logger.info("%s", json.dumps(line, separators=(",", ":")))
        if self.handler is not None:
            self._note(not self.handler.failed, "an audit line was lost")
            self.handler.failed = False

    def check(self) -> bool:
        """Whether the trail's file can be appended to now (recreated if it was removed)."""
        if self.handler is None:
            return True
        try:
            os.stat(self.path)  # the handler reopens a moved or recreated file by itself
            writable = os.access(self.path, os.W_OK)
        except FileNotFoundError:
            try:  # removed (rotation without a new file): create it again, or its folder is gone
                with open(self.path, "a", encoding="utf-8"):
                    pass
                writable = True
            except OSError:
                writable = False
        except OSError:
            writable = False
        self._note(writable, "it cannot be appended to")
        return writable

    def _note(self, ok: bool, why: str) -> None:
        if ok and not self.ok:
            log.warning("audit trail %s is writable again", self.path)
        elif not ok and self.ok:
            log.error("audit trail %s fails: %s; see audit_on_failure", self.path, why)
        self.ok = ok

    def close(self) -> None:
        if self.handler is not None:
            self.logger.removeHandler(self.handler)
            self.handler.close()


def audit_state(scope: Scope) -> dict:
    """The per-request slots that routes and error handlers fill for the audit line."""
    return scope.setdefault("state", {}).setdefault("audit", {})


class AuditRequests:
    """ASGI middleware: one audit line per HTTP request to an API route (not the probes, not static files)."""

    def __init__(self, app: ASGIApp, service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = {"bytes": 0, "status": 500}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                principal = audit_state(scope).get("principal")
                if principal is not None and principal.kind == "key":
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"x-key-id", principal.id.encode())]
            await send(message)

        try:
            await self.app(scope, counting_receive, send_wrapper)
        finally:
            self._record(scope, seen, started)

    def _record(self, scope: Scope, seen: dict, started: float) -> None:
        state = audit_state(scope)
        route = getattr(scope.get("route"), "path", None) or "other"
        error = state.get("error")
        refused = error in ("unauthorized", "forbidden")
        if not refused and (route in SKIPPED_ROUTES or route == "other" or route.startswith("/viewer")):
            return
        if route == "/metrics" and not refused and not self.service.settings.protect_metrics:
            return
        status = seen["status"]
        if error is None and status >= 500:
            error = "internal"  # an unhandled exception: its handler runs outside this middleware
        outcome = "ok" if status < 400 else ("client_closed" if error == "client_closed" else "error")
        backend = self.service.backend
        self.service.audit.record(
            "request",
            state.get("principal") or _unauthenticated(),
            tls=scope.get("scheme") == "https",
            method=scope.get("method"),
            route=route,
            status=status,
            outcome=outcome,
            error=error,
            bytes_in=seen["bytes"],
            frames=state.get("frames"),
            duration_ms=round((time.perf_counter() - started) * 1e3, 2),
            model_id=backend.model_id if backend is not None else None,
        )


def _unauthenticated() -> Principal:
    return Principal("none", "anonymous", frozenset())
