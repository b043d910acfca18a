"""Each connection's share of the server: request-head size, header count, head timeout, a connection cap.

uvicorn's httptools protocol has no limit on a request head: a URL or header arriving for minutes
is accumulated (``self.url += url``, header by header), stalling the event loop for every other
client, and a connection that never sends a request is kept forever. :func:`limited_protocol`
wraps that protocol class (the one ``uvicorn_config`` serves with) so that, per connection:

- the request head (request line, URL and headers) is at most ``max_head_kb`` KiB, and at most
  ``max_headers`` header lines: more gets ``431`` and the connection is closed, before the parser
  holds more than that;
- the head must be complete within ``head_timeout_s`` of the connection (or of the first byte of
  the next request on a keep-alive connection): else ``408`` (or a plain close if nothing came);
- at most ``max_connections`` connections are open (HTTP and WebSocket together): at the cap, the
  oldest connection that has not yet sent a complete request head is closed to make room (an
  honest client sends its head at once, so the idle ones go first); if every open connection is
  busy, the new one is closed.

An idle keep-alive connection is closed after ``keep_alive_timeout_s`` (uvicorn's own
``timeout_keep_alive``). WebSocket messages are bounded by ``ws_max_size`` and the stream timeouts.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from service.core.config import Settings
from service.core.errors import ServiceError

log = logging.getLogger(__name__)

HEAD_END = (b"\r\n\r\n", b"\n\n")


class _HeadRefused(Exception):
    pass


def limited_protocol(base: type, settings: Settings) -> type:
    """``base`` (uvicorn's ``HttpToolsProtocol``) with the limits above, from ``settings``."""
    max_head = settings.max_head_bytes
    max_headers = settings.max_headers
    head_timeout_s = settings.head_timeout_s
    max_connections = settings.max_connections
    waiting: dict = {}  # connections whose request head is not complete, oldest first
    closed = {"evicted": 0, "refused": 0}

    class LimitedProtocol(base):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._in_head = True
            self._head_bytes = 0
            self._header_lines = 0
            self._tail = b""
            self._refusal: tuple[int, str] | None = None
            self._head_timer = None
            self._start_head_timer()
            if len(self.connections) > max_connections:
                self._make_room()

        def connection_lost(self, exc) -> None:
            self._head_done()
            super().connection_lost(exc)

        # -- the cap --------------------------------------------------------------------------
        def _make_room(self) -> None:
            victim = next((p for p in waiting if p is not self), self)
            reason = "evicted" if victim is not self else "refused"
            closed[reason] += 1
            if sum(closed.values()) in (1, 10, 100) or sum(closed.values()) % 1000 == 0:
                log.warning(
                    "max_connections=%d reached: %d idle connections closed to make room, %d new refused",
                    max_connections,
                    closed["evicted"],
                    closed["refused"],
                )
            victim._head_done()
            self.connections.discard(victim)  # counted out now, not when the loop gets to it
            victim.transport.abort()

        # -- the head timeout -----------------------------------------------------------------
        def _start_head_timer(self) -> None:
            waiting[self] = None
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(head_timeout_s, self._head_timeout)

        def _head_done(self) -> None:
            waiting.pop(self, None)
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if not self._in_head or self.transport.is_closing():
                return
            if self._head_bytes:
                self._refuse(408, f"the request head did not arrive within head_timeout_s={head_timeout_s:g}")
            else:
                self._head_done()
                self.transport.close()

        # -- the head's size and header count ------------------------------------------------
        def data_received(self, data: bytes) -> None:
            if self._in_head and not self.transport.is_closing():
                if self._head_timer is None:  # the next request on a keep-alive connection
                    self._start_head_timer()
                room = max_head - self._head_bytes
                if len(data) > room:
                    window = self._tail + data[: room + 4]
                    if not any(end in window for end in HEAD_END):
                        self._refuse(431, f"the request head is larger than max_head_kb={max_head / 1024:g}")
                        return
                self._head_bytes += len(data)
                self._tail = data[-3:]
            super().data_received(data)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_lines += 1
            if self._header_lines > max_headers:
                self._refusal = (431, f"the request has more than max_headers={max_headers} header lines")
                raise _HeadRefused()  # the parser stops; uvicorn answers through send_400_response
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_done()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head, self._head_bytes, self._header_lines, self._tail = True, 0, 0, b""

        def send_400_response(self, msg: str) -> None:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                super().send_400_response(msg)

        def _refuse(self, status: int, msg: str) -> None:
            self._head_done()
            self._in_head = False
            code = "head_timeout" if status == 408 else "head_too_large"
            body = json.dumps(ServiceError(code, msg).payload()).encode()
            head = (
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
            self.transport.close()

    LimitedProtocol.__name__ = f"Limited{base.__name__}"
    return LimitedProtocol


def http_protocol(settings: Settings) -> tuple[type, dict]:
    """The HTTP protocol class to serve with, and extra uvicorn options: httptools with the limits
    above; without httptools (uvicorn installed without its ``standard`` extra), h11 with its own
    head size limit only, and a warning."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        log.warning("httptools is not installed: only the request head size is limited (h11)")
        return H11Protocol, {"h11_max_incomplete_event_size": settings.max_head_bytes}
    return limited_protocol(HttpToolsProtocol, settings), {}
