"""HTTP middleware: count requests by route template and status; the viewer's security headers.

:class:`RequestCounter` (``echoseg_http_requests_total``): the label is the matched route's
template (``/v1/segment``), never the raw path, so unknown paths cannot blow up the label set:
they count as ``other``. :class:`ViewerHeaders`: see its docstring.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.metrics import Metrics


class RequestCounter:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "other"
            self.metrics.http_requests.labels(template, str(status["code"])).inc()


# The viewer is one page, its script and its stylesheet, all from this server: no inline script or
# style; the video file and the recorded overlay are blob: URLs, the camera a MediaStream; the
# stream is a WebSocket to this same origin ('self' covers ws:/wss: of it, CSP level 3).
VIEWER_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
VIEWER_HEADERS = {
    "content-security-policy": VIEWER_CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",  # frame-ancestors for browsers without CSP level 2
    "referrer-policy": "no-referrer",
}


class ViewerHeaders:
    """Under ``/viewer``: the security headers above on every answer, and redirects made relative.

    Starlette builds a redirect (``/viewer`` -> ``/viewer/``) from the request's Host header; a
    ``Location`` is cut to its path and query, so it never points at another host.
    """

    def __init__(self, app: ASGIApp, prefix: str = "/viewer") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in VIEWER_HEADERS.items():
                    headers[name] = value
                if "location" in headers:
                    target = urlsplit(headers["location"])
                    headers["location"] = (target.path or "/") + (f"?{target.query}" if target.query else "")
            await send(message)

        await self.app(scope, receive, send_wrapper)
