"""The red team's minor findings: frame formats, repeated tokens, 405 answers."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np

from service.client import exchange
from service.codecs.frames import encode_frame


def test_a_png_stream_refuses_jpeg_frames(fake):
    server = fake()
    start = json.dumps({"type": "start", "width": 16, "height": 8, "encoding": "png"})
    jpeg = encode_frame(np.zeros((8, 16), np.uint8), "jpeg")
    received, code = asyncio.run(exchange(server.url.replace("http", "ws") + "/v1/stream", [start, jpeg]))
    error = json.loads(received[-1])
    assert code == 1003 and error["code"] == "corrupt_frame" and "JPEG" in error["detail"]


def test_a_repeated_token_is_refused(fake):
    server = fake(api_keys="good-key")
    ws = server.url.replace("http", "ws") + "/v1/stream"
    start = json.dumps({"type": "start", "width": 8, "height": 8})
    received, code = asyncio.run(exchange(f"{ws}?token=wrong&token=good-key", [start]))
    assert code == 1008 and json.loads(received[-1])["code"] == "unauthorized"
    received, code = asyncio.run(exchange(f"{ws}?token=good-key", [start, json.dumps({"type": "end"})]))
    assert json.loads(received[0])["type"] == "ready" and code == 1000


def test_405_says_which_methods_are_allowed(fake):
    resp = httpx.get(f"{fake().url}/v1/segment")
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert resp.json()["code"] == "method_not_allowed"
