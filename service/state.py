"""The running service: settings, metrics, the loaded backend and batcher, and the lifecycle.

One :class:`Service` per app instance, created by the app factory, filled by the lifespan and
injected into routes through ``service.api.deps``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from service.backends import Backend
from service.batcher import MicroBatcher
from service.core.config import Settings
from service.core.errors import WS_GOING_AWAY, ServiceError
from service.core.metrics import Metrics
from service.core.stages import StageHook

log = logging.getLogger(__name__)


class Closable(Protocol):
    async def close_for_shutdown(self, code: int) -> None: ...


class Service:
    def __init__(self, settings: Settings, metrics: Metrics, stage_hook: StageHook | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stage_hook = stage_hook
        self.backend: Backend | None = None
        self.batcher: MicroBatcher | None = None
        self.warmed = False
        self.draining = False
        self.streams: set[Closable] = set()
        self.uploads = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def attach(self, backend: Backend) -> None:
        """Take a loaded backend: warm it, start the batcher, publish the model."""
        s = self.settings
        backend.warmup(s.max_batch)
        self.backend = backend
        open_streams = (lambda: len(self.streams)) if s.stream_fast_path else None
        self.batcher = MicroBatcher(backend, self.metrics, s.max_batch, s.max_batch_wait_s, open_streams)
        self.batcher.start()
        cfg = backend.config
        self.metrics.model_info.labels(backend.model_id, cfg.preset, backend.name).set(1)
        self.warmed = True
        self._publish_ready()

    def close(self) -> None:
        self.warmed = False
        self._publish_ready()
        if self.batcher is not None:
            self.batcher.close()
        if self.backend is not None:
            self.backend.close()

    @property
    def ready(self) -> bool:
        return self.warmed and not self.draining

    def _publish_ready(self) -> None:
        self.metrics.ready.set(1 if self.ready else 0)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Stop taking work, let streams and uploads finish, then close what is left with 1001."""
        timeout_s = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        self.draining = True
        self._publish_ready()
        log.info("draining: %d streams, %d uploads in progress", len(self.streams), self.uploads)
        deadline = time.monotonic() + timeout_s
        while (self.streams or self.uploads) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.streams:
            log.info("closing %d streams still open after %.1f s", len(self.streams), timeout_s)
            await asyncio.gather(*(s.close_for_shutdown(WS_GOING_AWAY) for s in list(self.streams)))

    # -- admission -----------------------------------------------------------------------------
    def require_ready(self) -> tuple[Backend, MicroBatcher]:
        if self.draining:
            raise ServiceError(
                "shutting_down", "the server is draining before shutdown; retry on another replica"
            )
        if not self.warmed or self.backend is None or self.batcher is None:
            raise ServiceError("not_ready", "the model is still loading")
        return self.backend, self.batcher
