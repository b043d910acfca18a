"""Uploads get a reserved share of the backend while streams saturate it (they starved before).

The server's own micro-batcher, as the service builds it from its settings, behind a backend
that takes 20 ms a batch: sixteen real-time submitters keep its stream queue from ever emptying
(more windows wait than a batch holds), and an upload sends six chunks of eight windows, two in
flight, as ``service.segment`` does. With streams always first the upload never ran; with the
reserved slice (``upload_share``, 0.25 by default) it finishes in a few dozen batches, and the
streams keep the rest of the backend.
"""

from __future__ import annotations

import asyncio

import numpy as np

from tests.service.conftest import fake_backend

CHUNKS, MAX_BATCH, SUBMITTERS = 6, 8, 16


async def _upload_under_saturation(batcher, config, timeout_s: float) -> tuple[float | None, int]:
    """``(seconds the upload took or None when it did not finish, stream windows run meanwhile)``."""
    k, size = config.num_frames, config.input_size
    window = np.zeros((1, k, size, size), np.float32)
    chunk = np.zeros((MAX_BATCH, k, size, size), np.float32)
    stop = asyncio.Event()
    served = [0]

    async def stream() -> None:
        while not stop.is_set():
            await batcher.submit(window, realtime=True)
            served[0] += 1

    streams = [asyncio.create_task(stream()) for _ in range(SUBMITTERS)]
    await asyncio.sleep(0.3)  # the stream queue is full before the upload arrives
    in_flight = asyncio.Semaphore(2)

    async def send(c: np.ndarray) -> None:
        async with in_flight:
            await batcher.submit(c)

    loop = asyncio.get_running_loop()
    started, before = loop.time(), served[0]
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(send(chunk) for _ in range(CHUNKS)))
        took = loop.time() - started
    except TimeoutError:
        took = None
    meanwhile = served[0] - before
    stop.set()
    await asyncio.gather(*streams, return_exceptions=True)
    return took, meanwhile


def test_an_upload_finishes_while_streams_saturate_the_backend(make_server):
    server = make_server(fake_backend(delay_s=0.02), max_batch=MAX_BATCH)
    service = server.service
    took, stream_windows = server.call(
        _upload_under_saturation(service.batcher, service.backend.config, timeout_s=8.0), timeout=30
    )
    print(f"upload under saturating streams: {took} s, {stream_windows} stream windows meanwhile")
    assert took is not None, "the upload did not finish in 8 s while streams saturated the backend"
    # 48 upload windows at a reserved quarter: about 24 batches of 20 ms; well under 8 s
    assert took < 4.0, f"the upload took {took:.1f} s"
    share = CHUNKS * MAX_BATCH / (CHUNKS * MAX_BATCH + stream_windows)
    assert 0.1 < share < 0.5, f"uploads had {share:.0%} of the windows while they waited"
