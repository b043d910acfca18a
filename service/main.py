"""The FastAPI app factory: ``create_app(settings)`` builds one independent service instance.

The lifespan loads the model (exporting a checkpoint to ONNX when needed), warms it and starts
the micro-batcher before the server reports ready; it stops them when the server exits.
Each app has its own Prometheus registry, so tests can run several side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.api.errors import install_error_handlers
from service.api.middleware import RequestCounter, ViewerHeaders
from service.api.routes import health, metrics, models, segment, stream
from service.backends import Backend, create_backend
from service.core.audit import AuditRequests
from service.core.config import Settings
from service.core.metrics import Metrics
from service.core.stages import StageHook
from service.core.tls import PeerCertificates
from service.state import Service

log = logging.getLogger(__name__)

VIEWER_DIR = Path(__file__).resolve().parent / "viewer" / "static"


def create_app(
    settings: Settings | None = None, backend: Backend | None = None, stage_hook: StageHook | None = None
) -> FastAPI:
    """An app serving ``settings.model``; pass a loaded ``backend`` to serve that one instead.

    ``stage_hook``, when given, receives the per-stage timings of the streaming path (see
    :mod:`service.core.stages`); the stage benchmark passes one, the product runs without.
    """
    settings = settings or Settings()
    service = Service(settings, Metrics(), stage_hook)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = backend or await asyncio.to_thread(create_backend, settings)
        await asyncio.to_thread(service.attach, loaded)
        log.info("ready: model %s on %s (%s)", loaded.model_id, loaded.name, loaded.device)
        watcher = asyncio.create_task(service.watch_credentials())
        try:
            yield
        finally:
            watcher.cancel()
            await asyncio.to_thread(service.close)
            log.info("stopped")

    app = FastAPI(
        title="EchoSeg",
        summary="Left-ventricle segmentation of echocardiography video: REST clips and WebSocket streams",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.service = service
    for router in (health.router, metrics.router, models.router, segment.router, stream.router):
        app.include_router(router)
    # The live viewer: static files only (no PHI, no key needed to load it; its stream uses the key).
    app.mount("/viewer", StaticFiles(directory=VIEWER_DIR, html=True), name="viewer")
    install_error_handlers(app)
    app.add_middleware(RequestCounter, metrics=service.metrics)
    app.add_middleware(AuditRequests, service=service)
    app.add_middleware(ViewerHeaders)  # CSP, nosniff, no framing, no referrer; relative redirects
    app.add_middleware(PeerCertificates, tls=service.tls)  # outermost: the others see the cert subject
    return app
