"""The red team's minor findings: frame formats, repeated tokens, 405 answers."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.codecs.frames import encode_frame


async def _exchange(url: str, messages: list) -> tuple[list, int | None]:
    received = []
    async with connect(url) as ws:
        try:  # the server may refuse and close before every message is sent
            for m in messages:
                await ws.send(m)
        except ConnectionClosed:
            pass
        try:
            async with asyncio.timeout(30):
                async for reply in ws:
                    received.append(reply)
        except (ConnectionClosed, TimeoutError):
            pass
        return received, ws.close_code


def test_a_png_stream_refuses_jpeg_frames(fake):
    server = fake()
    start = json.dumps({"type": "start", "width": 16, "height": 8, "encoding": "png"})
    jpeg = encode_frame(np.zeros((8, 16), np.uint8), "jpeg")
    received, code = asyncio.run(_exchange(server.url.replace("http", "ws") + "/v1/stream", [start, jpeg]))
    error = json.loads(received[-1])
    assert code == 1003 and error["code"] == "corrupt_frame" and "JPEG" in error["detail"]


def test_a_repeated_token_is_refused(fake):
    server = fake(api_keys="good-key")
    ws = server.url.replace("http", "ws") + "/v1/stream"
    start = json.dumps({"type": "start", "width": 8, "height": 8})
    received, code = asyncio.run(_exchange(f"{ws}?token=wrong&token=good-key", [start]))
    assert code == 1008 and json.loads(received[-1])["code"] == "unauthorized"
    received, code = asyncio.run(_exchange(f"{ws}?token=good-key", [start, json.dumps({"type": "end"})]))
    assert json.loads(received[0])["type"] == "ready" and code == 1000


def test_405_says_which_methods_are_allowed(fake):
    resp = httpx.get(f"{fake().url}/v1/segment")
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert resp.json()["code"] == "method_not_allowed"
