"""Error details are bounded: a huge field value is neither parsed whole nor repeated in the answer or log.

The real server (``echoseg serve``) is measured from outside: its peak RSS from /proc (reset just
before the message) and the growth of its log file.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.hostile import peak_rss_mb, reset_peak, rss_mb

HUGE = 50_000_000  # characters in one field of a start message


async def _send_text(url: str, text: str) -> tuple[list, int | None]:
    """One text message on a new stream; every reply until the close (replies of any size accepted)."""
    received: list = []
    async with connect(url, max_size=2**27, open_timeout=30) as ws:
        await ws.send(text)
        try:
            async with asyncio.timeout(60):
                async for reply in ws:
                    received.append(reply)
        except (ConnectionClosed, TimeoutError):
            pass
        return received, ws.close_code


def test_a_huge_start_field_is_not_repeated_in_the_answer_or_the_log(served):
    server = served()
    url = server.url.replace("http", "ws") + "/v1/stream"
    start = json.dumps({"type": "start", "width": 64, "height": 64, "encoding": "x" * HUGE})
    log_before = len(server.log())
    idle = rss_mb(server.pid)
    assert reset_peak(server.pid)
    received, code = asyncio.run(_send_text(url, start))
    grew = peak_rss_mb(server.pid) - idle
    print(
        f"50 MB start field: close {code}, peak RSS +{grew:.0f} MB, log +{len(server.log()) - log_before} B"
    )
    error = json.loads(received[-1])
    assert error["type"] == "error" and len(error["detail"]) < 1000, len(error["detail"])
    assert error["code"] == "frame_too_large" and code == 1009
    log_grew = len(server.log()) - log_before
    assert log_grew < 10_000, f"the log grew by {log_grew} bytes for one message"
    # the message itself arrives (50 MB of bytes, then 50 M characters); nothing more is built from it
    assert grew < 200, f"peak RSS grew by {grew:.0f} MB for one 50 MB message"
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_every_error_detail_is_cut_in_one_place():
    from service.core.errors import MAX_DETAIL_CHARS, ServiceError

    err = ServiceError("invalid_request", "value " + "y" * 10 * MAX_DETAIL_CHARS)
    assert len(err.detail) < MAX_DETAIL_CHARS + 60 and err.detail.startswith("value yyy")
    assert err.detail.endswith(f"{10 * MAX_DETAIL_CHARS + 6} characters in all)")
    assert err.payload()["detail"] == err.detail == str(err)
    assert ServiceError("invalid_request", "short").detail == "short"
