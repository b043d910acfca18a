"""Items 7 and 8: a client that goes away is not a server error; SIGTERM ends everything in flight.

The drain test checks outcomes (who got which answer, the exit status); how long the exit takes
is measured by ``benchmarks/faults.py`` (no timed assertions in tests).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.hostile import open_partial_upload, read_status


def _count(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_client_disconnect_is_client_closed_not_a_server_error(fake):
    server = fake(body_idle_timeout_s=30)
    s = open_partial_upload(server.port, 1_000_000, b"\x93NUMPY" + b"\x00" * 1000)
    for _ in range(100):  # bounded: until the server has the body's first bytes
        if server.service.body_reads == 1:
            break
        time.sleep(0.05)
    s.close()
    m = {}
    for _ in range(100):  # bounded: until the request has been counted
        m = server.metrics()
        if _count(m, "echoseg_http_requests_total", route="/v1/segment", status="499"):
            break
        time.sleep(0.05)
    assert _count(m, "echoseg_http_requests_total", route="/v1/segment", status="499") == 1
    assert _count(m, "echoseg_errors_total", code="client_closed") == 1
    assert _count(m, "echoseg_http_requests_total", route="/v1/segment", status="500") == 0
    assert _count(m, "echoseg_errors_total", code="internal") == 0


def test_a_client_that_leaves_during_processing_frees_its_upload(make_server):
    from tests.service.conftest import fake_backend, moving_disc_clip
    from tests.service.test_api import npy_bytes

    backend = fake_backend(delay_s=0.3)
    server = make_server(backend, max_batch=8)
    body = npy_bytes(moving_disc_clip(64))  # 8 batches of 8 windows, 0.3 s each
    s = open_partial_upload(server.port, len(body), body)  # the whole body, then hang up
    for _ in range(200):  # bounded: until the upload is being processed
        if server.service.uploads == 1:
            break
        time.sleep(0.02)
    s.close()
    m = {}
    for _ in range(200):  # bounded: until the server noticed and let the upload go
        m = server.metrics()
        if server.service.uploads == 0 and _count(m, "echoseg_errors_total", code="client_closed"):
            break
        time.sleep(0.05)
    assert server.service.uploads == 0
    assert _count(m, "echoseg_errors_total", code="client_closed") == 1
    assert _count(m, "echoseg_http_requests_total", route="/v1/segment", status="499") == 1
    for _ in range(100):  # bounded: until the batches already queued have run
        if server.service.batcher.pending() == 0:
            break
        time.sleep(0.05)
    assert sum(backend.batches) < 64, "the rest of the clip was not inferred for nobody"


def test_a_stream_that_hangs_up_leaves_no_work_behind(make_server):
    from tests.service.conftest import fake_backend

    backend = fake_backend(delay_s=0.2)
    server = make_server(backend, max_batch=1, stream_queue=32)

    async def flood_and_leave():
        async with connect(server.url.replace("http", "ws") + "/v1/stream") as ws:
            await ws.send(json.dumps({"type": "start", "width": 8, "height": 8}))
            await asyncio.wait_for(ws.recv(), 20)
            for _ in range(21):  # 20 windows queued at 0.2 s each
                await ws.send(bytes(64))
            for _ in range(100):  # bounded: until the server has queued them
                if server.service.batcher.pending() >= 15:
                    break
                await asyncio.sleep(0.02)

    asyncio.run(flood_and_leave())  # leaving the block closes the connection
    for _ in range(200):  # bounded: until the batcher's queue is empty
        if server.service.batcher.pending() == 0:
            break
        time.sleep(0.02)
    assert server.service.batcher.pending() == 0
    assert sum(backend.batches) < 10, "windows of a closed stream were inferred for nobody"


async def _stream_until_closed(url: str, started: asyncio.Event) -> tuple[list, int | None]:
    received = []
    async with connect(url.replace("http", "ws") + "/v1/stream") as ws:
        await ws.send(json.dumps({"type": "start", "width": 8, "height": 8}))
        received.append(await asyncio.wait_for(ws.recv(), 20))
        await ws.send(bytes(64))
        started.set()
        try:
            async with asyncio.timeout(60):
                async for m in ws:
                    received.append(m)
        except (ConnectionClosed, TimeoutError):
            pass
        return received, ws.close_code


def test_sigterm_during_a_stream_and_a_long_upload_ends_both_and_exits(served):
    server = served(
        ECHOSEG_DRAIN_TIMEOUT_S="1", ECHOSEG_BODY_IDLE_TIMEOUT_S="120", ECHOSEG_BODY_TIMEOUT_S="600"
    )
    upload = open_partial_upload(server.port, 10_000_000, b"\x93NUMPY" + b"\x00" * 4096)

    async def main():
        started = asyncio.Event()
        stream = asyncio.create_task(_stream_until_closed(server.url, started))
        await asyncio.wait_for(started.wait(), 20)
        for _ in range(100):  # bounded: until the server counts the upload in flight
            text = (await asyncio.to_thread(httpx.get, f"{server.url}/metrics")).text
            if "echoseg_active_streams 1.0" in text:
                break
            await asyncio.sleep(0.05)
        server.process.send_signal(15)  # SIGTERM
        status = await asyncio.to_thread(read_status, upload, 30)
        return status, await stream

    try:
        status, (received, code) = asyncio.run(main())
    finally:
        upload.close()
    assert status == 503, "the upload in flight was answered drain_timeout"
    assert code == 1001 and json.loads(received[-1])["code"] == "shutting_down"
    try:
        rc = server.process.wait(30)  # a hang guard, not a timing: benchmarks/faults.py measures it
    except subprocess.TimeoutExpired:
        rc = None
    assert rc == 0, "the server exited by itself after the drain"
    assert "drain_timeout" in server.log() or "cancelling 1 requests" in server.log()
