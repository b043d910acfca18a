"""Items 3 and 4: slow or stalled bodies, and idle WebSockets, cannot hold the server's slots."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.hostile import open_partial_upload, read_status
from service.client import stream_frames
from tests.service.conftest import moving_disc_clip
from tests.service.test_api import npy_bytes

NPY = {"Content-Type": "application/x-npy"}


def test_slow_uploads_do_not_lock_out_rest(fake):
    server = fake(max_uploads=2, body_idle_timeout_s=60, body_timeout_s=120)
    stalled = [open_partial_upload(server.port, 1_000_000, b"\x93NUMPY") for _ in range(4)]
    try:
        resp = httpx.post(f"{server.url}/v1/segment", content=npy_bytes(moving_disc_clip(6)), headers=NPY)
        assert resp.status_code == 200, resp.text
        assert server.service.body_reads == 4 and server.service.uploads == 0
    finally:
        for s in stalled:
            s.close()


def test_bodies_in_memory_are_bounded_and_released(fake):
    server = fake(max_body_buffer_mb=0.5)
    small = npy_bytes(moving_disc_clip(6))
    big = npy_bytes(np.zeros((8, 256, 256), np.uint8))  # 512 KiB + header
    resp = httpx.post(f"{server.url}/v1/segment", content=big, headers=NPY)
    assert resp.status_code == 503 and resp.json()["code"] == "overloaded"
    assert "max_body_buffer_mb" in resp.json()["detail"]
    assert httpx.post(f"{server.url}/v1/segment", content=small, headers=NPY).status_code == 200
    assert server.service.body_bytes == 0


def test_a_stalled_body_gets_408(fake):
    server = fake(body_idle_timeout_s=0.5)
    s = open_partial_upload(server.port, 1_000_000, b"\x00" * 100)  # promised 1 MB, sent 100 bytes
    try:
        assert read_status(s, timeout_s=20) == 408
    finally:
        s.close()
    assert server.metrics()[("echoseg_errors_total", (("code", "body_timeout"),))] == 1


def test_a_trickled_body_meets_the_total_timeout(fake):
    server = fake(body_idle_timeout_s=30, body_timeout_s=1)
    s = open_partial_upload(server.port, 1_000_000, b"\x00")
    status = None
    try:
        for _ in range(100):  # one byte every 0.1 s: never idle, always too slow
            try:
                s.sendall(b"\x00")
            except OSError:
                break
            time.sleep(0.1)
            status = read_status(s, timeout_s=0.01)
            if status is not None:
                break
        status = status or read_status(s, timeout_s=20)
    finally:
        s.close()
    assert status == 408


async def _idle_socket(url: str, send_start: bool) -> tuple[list[str], int | None]:
    received = []
    async with connect(url.replace("http", "ws") + "/v1/stream") as ws:
        if send_start:
            await ws.send(json.dumps({"type": "start", "width": 8, "height": 8}))
            received.append(await asyncio.wait_for(ws.recv(), 20))
            await ws.send(bytes(64))
        try:
            async with asyncio.timeout(30):
                async for m in ws:
                    received.append(m)
        except (ConnectionClosed, TimeoutError):
            pass
        return received, ws.close_code


def test_idle_websockets_do_not_hold_stream_slots(fake):
    server = fake(max_streams=2, stream_start_timeout_s=0.5)

    async def main():
        idle = [asyncio.create_task(_idle_socket(server.url, False)) for _ in range(2)]
        results = await asyncio.gather(*idle)
        report = await stream_frames(moving_disc_clip(5), server.url, fps=None)
        return results, report

    results, report = asyncio.run(main())
    for received, code in results:
        assert code == 1008 and json.loads(received[-1])["code"] == "start_timeout"
    assert report.error is None and report.indices == list(range(5))


def test_a_started_stream_that_goes_quiet_is_closed(fake):
    server = fake(stream_idle_timeout_s=0.5)
    received, code = asyncio.run(_idle_socket(server.url, True))
    assert json.loads(received[0])["type"] == "ready"
    assert code == 1008 and json.loads(received[-1])["code"] == "idle_timeout"
