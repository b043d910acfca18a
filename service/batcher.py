"""Dynamic micro-batcher: one worker thread owns the backend and runs everyone's windows in batches.

Streams submit one window per frame, uploads submit chunks of windows. The worker takes the
oldest request, then keeps adding requests until the batch holds ``max_batch`` windows or
``max_wait`` has passed since it started forming, runs the backend once, and hands each caller
its slice through an asyncio future (``loop.call_soon_threadsafe``), so inference never runs on
the event loop and no caller waits for another's result handling. Stream windows (real-time)
are taken before upload chunks (bulk) when both are waiting, except that uploads have a reserved
slice: while bulk windows wait, they go first whenever they have had less than ``upload_share``
of the windows run since they began waiting. So streams that saturate the backend slow down
by that share instead of starving every upload (which then timed out); with no upload waiting,
streams have the whole backend.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from echoseg.runtime import DEFAULT_MAX_BATCH
from service.backends import Backend
from service.core.errors import ServiceError
from service.core.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """One request's logits ``(n, S, S)`` and where its time went."""

    logits: np.ndarray
    queue_s: float  # enqueue -> its batch started
    inference_s: float  # backend time of the batch that carried it
    batch_size: int


@dataclass
class _Request:
    windows: np.ndarray  # (n, k, S, S) float32
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    source: object | None = None  # the stream that sent it (real-time requests)
    realtime: bool = False  # a stream's window (else an upload's chunk)
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def n(self) -> int:
        return self.windows.shape[0]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve(fut: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if fut.done():  # the caller went away (cancelled)
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class MicroBatcher:
    """Owns ``backend`` on a worker thread; :meth:`submit` is the async way in."""

    def __init__(
        self,
        backend: Backend,
        metrics: Metrics,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_s: float = 0.0015,
        open_sources: Callable[[], int] | None = None,
        upload_share: float = 0.0,
    ):
        """``open_sources``, when given, says how many streams are open: a batch of real-time windows
        stops waiting to fill once every open stream has one in it (nobody else is coming).
        ``upload_share`` in [0, 1): the least share of the windows run that waiting bulk requests
        get (0: real-time always first)."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 0.0 <= upload_share < 1.0:
            raise ValueError(f"upload_share must be in [0, 1), got {upload_share}")
        self.backend = backend
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.open_sources = open_sources
        self.upload_share = upload_share
        self._served = [0, 0]  # windows run since bulk requests began waiting: [all, bulk]
        self._realtime: deque[_Request] = deque()
        self._bulk: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="echoseg-batcher", daemon=True)

    # -- caller side (event loop) --------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def enqueue(self, windows: np.ndarray, realtime: bool = False, source: object = None) -> asyncio.Future:
        """Queue ``(n, k, S, S)`` windows (n <= max_batch) now; the future gets a :class:`BatchResult`.

        ``realtime`` requests (stream frames) are batched before bulk ones (upload chunks);
        ``source`` names the stream a real-time request comes from.
        """
        if windows.ndim != 4 or not 1 <= windows.shape[0] <= self.max_batch:
            raise ValueError(
                f"enqueue takes (n, k, S, S) windows with 1 <= n <= {self.max_batch}, got {windows.shape}"
            )
        loop = asyncio.get_running_loop()
        req = _Request(windows, loop.create_future(), loop, source if realtime else None, realtime)
        with self._cond:
            if self._stopping:
                raise ServiceError("shutting_down", "the server is shutting down")
            (self._realtime if realtime else self._bulk).append(req)
            self._cond.notify()
        return req.future

    async def submit(self, windows: np.ndarray, realtime: bool = False) -> BatchResult:
        """Run ``(n, k, S, S)`` windows and return their ``(n, S, S)`` logits."""
        return await self.enqueue(windows, realtime)

    def infer_from_thread(
        self,
        windows: np.ndarray,
        loop: asyncio.AbstractEventLoop,
        realtime: bool = False,
        timeout_s: float = 30.0,
    ) -> np.ndarray:
        """Run ``(n, k, S, S)`` windows (``max_batch`` at a time) from a worker thread, not the event
        loop ``loop``, and wait at most ``timeout_s`` for each part; ``(n, S, S)`` logits.

        Raises ``TimeoutError`` (the part in flight is cancelled) or what :meth:`submit` raises."""
        if _running_loop() is loop:
            raise RuntimeError("infer_from_thread would block the event loop; await submit() there")
        out = []
        for i in range(0, windows.shape[0], self.max_batch):
            part = asyncio.run_coroutine_threadsafe(
                self.submit(windows[i : i + self.max_batch], realtime), loop
            )
            try:
                out.append(part.result(timeout_s).logits)
            except TimeoutError:
                part.cancel()
                raise TimeoutError(f"no result within {timeout_s:g} s") from None
        return np.concatenate(out)

    def pending(self) -> int:
        with self._cond:
            return sum(r.n for r in self._realtime) + sum(r.n for r in self._bulk)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after the batch in progress; waiting callers get ``shutting_down``."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            left = [*self._realtime, *self._bulk]
            self._realtime.clear()
            self._bulk.clear()
        for req in left:
            err = ServiceError("shutting_down", "the server is shutting down")
            req.loop.call_soon_threadsafe(_resolve, req.future, None, err)

    # -- worker side ---------------------------------------------------------------------------
    def _next(self, room: int) -> _Request | None:
        """Pop the first waiting request that fits in ``room`` windows (real-time first, unless bulk
        requests are behind their reserved share)."""
        bulk_due = self._bulk and self._served[1] < self.upload_share * self._served[0]
        for q in (self._bulk, self._realtime) if bulk_due else (self._realtime, self._bulk):
            while q and q[0].future.cancelled():  # its caller went away (stream closed, upload cancelled)
                q.popleft()
            if q and q[0].n <= room:
                return q.popleft()
        return None

    def _form_batch(self) -> list[_Request] | None:
        with self._cond:
            first = None
            while first is None:  # _next may find only requests whose callers went away
                while not (self._realtime or self._bulk):
                    if self._stopping:
                        return None
                    self._cond.wait()
                if self._stopping:
                    return None
                first = self._next(self.max_batch)
            batch = [first]
            count = first.n
            deadline = time.perf_counter() + self.max_wait_s
            while count < self.max_batch:
                req = self._next(self.max_batch - count)
                if req is not None:
                    batch.append(req)
                    count += req.n
                    continue
                if self._realtime or self._bulk:  # what waits does not fit
                    break
                if self._every_stream_in(batch):
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            self._count(batch)
            return batch

    def _count(self, batch: list[_Request]) -> None:
        """Windows run while bulk requests wait (the share is measured from when they began waiting)."""
        bulk = sum(r.n for r in batch if not r.realtime)
        if not bulk and not self._bulk:
            self._served = [0, 0]
            return
        self._served[0] += sum(r.n for r in batch)
        self._served[1] += bulk

    def _every_stream_in(self, batch: list[_Request]) -> bool:
        """True when the batch holds only stream windows and every open stream has one in it."""
        if self.open_sources is None or any(r.source is None for r in batch):
            return False
        return len({id(r.source) for r in batch}) >= self.open_sources()

    def _run(self) -> None:
        while True:
            batch = self._form_batch()
            if batch is None:
                return
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Request]) -> None:
        start = time.perf_counter()
        windows = batch[0].windows if len(batch) == 1 else np.concatenate([r.windows for r in batch])
        try:
            logits = self.backend.infer(windows)  # (B, k, S, S) -> (B, 1, S, S)
        except Exception as e:  # the callers must hear of it; the worker keeps serving
            log.exception("backend %s failed on a batch of %d", self.backend.name, windows.shape[0])
            err = ServiceError("internal", f"inference failed: {type(e).__name__}")
            for r in batch:
                r.loop.call_soon_threadsafe(_resolve, r.future, None, err)
            return
        took = time.perf_counter() - start
        size = windows.shape[0]
        self.metrics.inference.labels(self.backend.name).observe(took)
        self.metrics.batch_size.observe(size)
        offset = 0
        for r in batch:
            wait = start - r.enqueued
            self.metrics.queue_wait.observe(wait)
            result = BatchResult(logits[offset : offset + r.n, 0], wait, took, size)
            offset += r.n
            r.loop.call_soon_threadsafe(_resolve, r.future, result)
