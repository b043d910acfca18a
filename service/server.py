"""Run the app under uvicorn with a graceful drain on SIGTERM/SIGINT.

uvicorn alone closes WebSockets with 1012 at once on shutdown. Here the first signal starts the
drain instead: ``/readyz`` turns 503 (so a load balancer stops routing), new work is refused,
open streams and uploads get ``drain_timeout_s`` to finish; then uploads still running are
cancelled (503 ``drain_timeout``) and streams closed with 1001, and uvicorn stops, all within
about a second more. A second signal exits at once. SIGHUP re-reads the key file and the TLS
certificate, key and CA bundle (they are also re-read when they change on disk). Log handlers get
the secret redaction of ``service.core.logging``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import uvicorn

from service.core.config import Settings
from service.core.connections import http_protocol
from service.core.logging import install_redaction
from service.core.tls import ServerTLS
from service.main import create_app

log = logging.getLogger(__name__)

UVICORN_GRACE_S = 0.3  # after the drain: how long uvicorn waits for connections to close


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service) -> None:
        super().__init__(config)
        self.service = service
        self._drain_task: asyncio.Task | None = None

    def handle_exit(self, sig, frame) -> None:
        if self._drain_task is not None or self.should_exit:
            super().handle_exit(sig, frame)  # second signal: stop now
            return
        loop = asyncio.get_event_loop()
        log.info("signal %s: draining for up to %.1f s", sig, self.service.settings.drain_timeout_s)
        self._drain_task = loop.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.service.drain()
        finally:
            self.should_exit = True


def uvicorn_config(
    app, settings: Settings, host: str, port: int, tls: ServerTLS | None = None
) -> uvicorn.Config:
    """The server's uvicorn config; with ``tls`` (the service's, when ``ssl_certfile`` is set) it
    serves HTTPS and wss:// from that live, reloadable context (see :mod:`service.core.tls`).
    Every connection gets the limits of :mod:`service.core.connections`."""
    protocol, extra = http_protocol(settings)  # head size, header count, head timeout, connection cap
    if tls is not None:
        extra["ssl_context_factory"] = tls.context_factory
        protocol = tls.protocol(protocol)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        ws_max_size=64 * 2**20,
        ws_per_message_deflate=settings.ws_deflate,
        lifespan="on",
        # the drain has already waited drain_timeout_s and cancelled what was left; uvicorn
        # then only waits this long for connections to close
        timeout_graceful_shutdown=UVICORN_GRACE_S,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        http=protocol,
        **extra,
    )
    install_redaction()  # after uvicorn.Config configured its loggers: no key in any log line
    return config


def run_server(settings: Settings, host: str, port: int, exit_at_once: bool = True) -> None:
    """Serve until a signal; then drain, stop and (``exit_at_once``) end the process right away.

    Once uvicorn has stopped and the lifespan has closed the batcher and the backend, nothing
    is left to save; the interpreter's own teardown (finalizers of torch and ONNX Runtime when
    they are loaded) takes 1-2 s on a busy machine, which would push the exit past the drain
    timeout + 1 s. So the logs are flushed and the process exits with ``os._exit``.
    """
    app = create_app(settings)
    service = app.state.service
    server = DrainingServer(uvicorn_config(app, settings, host, port, service.tls), service)
    if hasattr(signal, "SIGHUP"):  # reload keys and certificates; open connections stay
        signal.signal(signal.SIGHUP, lambda sig, frame: service.request_reload())
    server.run()
    if exit_at_once and server.started:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
