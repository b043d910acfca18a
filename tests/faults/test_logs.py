"""Item 5: the API key never reaches a log line, at DEBUG, over REST and WebSocket, header or query."""

from __future__ import annotations

import asyncio
import secrets

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.client import stream_frames
from tests.service.conftest import moving_disc_clip


async def _refused_ws(url: str) -> int | None:
    async with connect(url) as ws:
        try:
            async with asyncio.timeout(20):
                async for _ in ws:
                    pass
        except (ConnectionClosed, TimeoutError):
            pass
        return ws.close_code


def test_api_key_is_never_logged(served):
    key = "k" + secrets.token_hex(16)
    server = served(ECHOSEG_API_KEYS=key, ECHOSEG_LOG_LEVEL="DEBUG")
    url, ws = server.url, server.url.replace("http", "ws") + "/v1/stream"
    bearer = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{url}/v1/models?token={key}", headers=bearer).status_code == 200
    assert httpx.post(f"{url}/v1/segment?token={key}", content=b"", headers=bearer).status_code == 400
    assert httpx.post(f"{url}/v1/segment", headers={"Authorization": f"Bearer {key}x"}).status_code == 401
    clip = moving_disc_clip(4)
    for in_query in (True, False):
        report = asyncio.run(stream_frames(clip, url, fps=None, api_key=key, token_in_query=in_query))
        assert report.close_code == 1000
    assert asyncio.run(_refused_ws(f"{ws}?token={key}x")) == 1008
    assert server.terminate() < 60
    log = server.log()
    assert "GET /v1/models?token=" in log and "/v1/stream?token=" in log, "the access log was written"
    leaks = [line for line in log.splitlines() if key in line]
    assert not leaks, f"{len(leaks)} log lines hold the key, e.g. {leaks[0]!r}"
    assert "authorization: bearer" not in log.lower()
