"""The running service: settings, metrics, the loaded backend and batcher, and the lifecycle.

One :class:`Service` per app instance, created by the app factory, filled by the lifespan and
injected into routes through ``service.api.deps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Protocol

from service.backends import Backend
from service.batcher import MicroBatcher
from service.core.audit import AuditTrail
from service.core.config import Settings
from service.core.errors import WS_GOING_AWAY, ServiceError
from service.core.keys import KeyFileError, KeyRing, Principal
from service.core.metrics import Metrics
from service.core.stages import StageHook
from service.core.tls import ServerTLS

log = logging.getLogger(__name__)

DRAIN_CLOSE_S = 0.5  # after the drain timeout: how long cancelled work gets to answer and close


class Closable(Protocol):
    principal: Principal

    async def close_for_shutdown(self, code: int) -> None: ...

    async def close_with(self, err: ServiceError) -> None: ...


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
        self.uploads = 0  # uploads holding a processing slot (body read, being segmented)
        self.body_reads = 0  # requests whose body is still arriving
        self.body_bytes = 0  # bytes of upload bodies in memory (arriving or being processed)
        self.requests: set[asyncio.Task] = set()  # REST work the drain waits for, then cancels
        self.drain_cancelled: set[asyncio.Task] = set()
        # who may call (re-read when the key file changes), the live TLS context, the audit trail
        self.keys = KeyRing.load(settings.keys, settings.api_key_file)
        self._warn_if_locked()
        self.tls = ServerTLS(settings) if settings.tls else None
        self.audit = AuditTrail(settings.audit_log)
        self._stamps = self._file_stamps()
        self._reload_now: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def attach(self, backend: Backend) -> None:
        """Take a loaded backend: warm it, start the batcher, publish the model."""
        s = self.settings
        backend.warmup(s.max_batch)
        self.backend = backend
        open_streams = (lambda: len(self.streams)) if s.stream_fast_path else None
        self.batcher = MicroBatcher(
            backend, self.metrics, s.max_batch, s.max_batch_wait_s, open_streams, s.upload_share
        )
        self.batcher.start()
        cfg = backend.config
        self.metrics.model_info.labels(backend.model_id, cfg.preset, backend.name).set(1)
        self.warmed = True
        self.publish_ready()

    def close(self) -> None:
        self.warmed = False
        self.publish_ready()
        if self.batcher is not None:
            self.batcher.close()
        if self.backend is not None:
            self.backend.close()
        self.audit.close()

    # -- credentials: key file and TLS files, re-read without a restart --------------------------
    def _watched(self) -> dict[str, list[str]]:
        return {
            "keys": [self.settings.api_key_file] if self.settings.api_key_file else [],
            "tls": self.tls.files if self.tls is not None else [],
        }

    def _file_stamps(self) -> dict[str, tuple]:
        """(inode, size, mtime) of each watched file; a Kubernetes Secret update swaps a symlink,
        which changes all three of the file the path resolves to."""
        stamps = {}
        for what, paths in self._watched().items():
            for path in paths:
                try:
                    st = os.stat(path)
                    stamps[f"{what}:{path}"] = (st.st_ino, st.st_size, st.st_mtime_ns)
                except OSError:
                    stamps[f"{what}:{path}"] = None
        return stamps

    def request_reload(self) -> None:
        """Re-read keys and certificates now (SIGHUP); safe to call from a signal handler."""
        if self._loop is not None and self._reload_now is not None:
            self._loop.call_soon_threadsafe(self._reload_now.set)

    async def watch_credentials(self) -> None:
        """Every ``reload_interval_s`` (or at once on :meth:`request_reload`): reload what changed."""
        self._loop = asyncio.get_running_loop()
        self._reload_now = asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload_now.wait(), self.settings.reload_interval_s)
            forced = self._reload_now.is_set()
            self._reload_now.clear()
            try:
                stamps = self._file_stamps()
                changed = {k.partition(":")[0] for k in stamps if stamps[k] != self._stamps.get(k)}
                self._stamps = stamps
                if forced or "keys" in changed:
                    await self.reload_keys()
                if self.tls is not None and (forced or "tls" in changed) and self.tls.reload():
                    await self.close_revoked_certificates()
            except Exception:  # the watcher must outlive any one failed reload
                log.exception("reloading keys or certificates failed; the previous ones stay in force")

    async def reload_keys(self) -> bool:
        """Take the key file as it is now; close open streams whose key was removed or lost ``stream``."""
        try:
            ring = KeyRing.load(self.settings.keys, self.settings.api_key_file)
        except KeyFileError as exc:
            log.error("key file not reloaded, the previous keys stay in force: %s", exc)
            return False
        self.keys = ring
        log.info("keys reloaded: %d keys", len(ring.entries))
        self._warn_if_locked()
        self.publish_ready()
        revoked = [s for s in list(self.streams) if not ring.still_valid(s.principal, "stream")]
        for stream in revoked:
            log.info("closing a stream of %s: its key was revoked", stream.principal.name)
        err = ServiceError("unauthorized", "the API key of this stream was revoked")
        await asyncio.gather(*(s.close_with(err) for s in revoked), return_exceptions=True)
        return True

    async def close_revoked_certificates(self) -> None:
        """Close open streams whose client certificate is now on the deny-list."""
        revoked = [s for s in list(self.streams) if self.tls is not None and self.tls.revoked(s.principal)]
        for stream in revoked:
            log.info("closing a stream of %s: its certificate was revoked", stream.principal.name)
        err = ServiceError("unauthorized", "the client certificate of this stream was revoked")
        await asyncio.gather(*(s.close_with(err) for s in revoked), return_exceptions=True)

    def _warn_if_locked(self) -> None:
        if self.keys.locked:
            log.error(
                "api_key_file %s holds no keys: every caller is refused and /readyz reports not ready "
                "until a key is added",
                self.settings.api_key_file,
            )

    def problems(self) -> list[str]:
        """Why the server is not ready (empty: ready); checks the audit trail's file now."""
        found = []
        if not self.warmed:
            found.append("model_loading")
        if self.draining:
            found.append("draining")
        if self.keys.locked:
            found.append("no_api_keys")
        if not self.audit.check():
            found.append("audit_unwritable")
        return found

    @property
    def ready(self) -> bool:
        return self.warmed and not self.draining and not self.keys.locked and self.audit.ok

    def publish_ready(self) -> None:
        self.metrics.ready.set(1 if self.ready else 0)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Stop taking work, give streams and uploads ``timeout_s`` to finish, then end what is left.

        Past the timeout, uploads still running are cancelled (their clients get 503
        ``drain_timeout``) and streams are closed with 1001 ``shutting_down``; that last step is
        bounded too (:data:`DRAIN_CLOSE_S`), so the whole drain takes at most about
        ``timeout_s + DRAIN_CLOSE_S``.
        """
        timeout_s = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        self.draining = True
        self.publish_ready()
        log.info("draining: %d streams, %d requests in progress", len(self.streams), len(self.requests))
        deadline = time.monotonic() + timeout_s
        while (self.streams or self.requests) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        late = list(self.requests)
        if late:
            log.warning("cancelling %d requests still running after %.1f s", len(late), timeout_s)
            self.drain_cancelled.update(late)
            for task in late:
                task.cancel()
        closing = [s.close_for_shutdown(WS_GOING_AWAY) for s in list(self.streams)]
        if closing:
            log.info("closing %d streams still open after %.1f s", len(closing), timeout_s)
        waits = [*closing, *(self._finished(t) for t in late)]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), DRAIN_CLOSE_S)

    @staticmethod
    async def _finished(task: asyncio.Task) -> None:
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)

    @contextlib.asynccontextmanager
    async def track_request(self) -> AsyncIterator[None]:
        """Mark the current REST request as in flight: the drain waits for it, then cancels it.

        A cancellation by the drain surfaces as ``ServiceError("drain_timeout")`` (503).
        """
        task = asyncio.current_task()
        assert task is not None
        self.requests.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if task not in self.drain_cancelled:
                raise
            task.uncancel()
            raise ServiceError(
                "drain_timeout", "the server shut down before this request finished; retry elsewhere"
            ) from None
        finally:
            self.requests.discard(task)
            self.drain_cancelled.discard(task)

    # -- admission -----------------------------------------------------------------------------
    def require_ready(self) -> tuple[Backend, MicroBatcher]:
        if self.draining:
            raise ServiceError(
                "shutting_down", "the server is draining before shutdown; retry on another replica"
            )
        if not self.warmed or self.backend is None or self.batcher is None:
            raise ServiceError("not_ready", "the model is still loading")
        if not self.audit.check() and self.settings.audit_on_failure == "refuse":
            self.publish_ready()
            raise ServiceError(
                "not_ready", "the audit trail cannot be written; no work is taken until it can"
            )
        return self.backend, self.batcher
