"""Streams are shared fairly: one caller holds at most its quota, and a stream that trickles tiny
valid frames is closed for lack of progress instead of holding its slot forever."""

from __future__ import annotations

import asyncio
import contextlib
import json

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def start(url: str, width: int = 8, height: int = 8):
    ws = await connect(url.replace("http", "ws") + "/v1/stream")
    with contextlib.suppress(ConnectionClosed):  # refused at once: its error message is here already
        await ws.send(json.dumps({"type": "start", "width": width, "height": height}))
    return ws, json.loads(await asyncio.wait_for(ws.recv(), 10))


def test_one_caller_gets_its_quota_of_streams(fake):
    server = fake(max_streams=4, max_streams_per_client=2)

    async def main():
        opened = [await start(server.url) for _ in range(3)]
        answers = [m for _, m in opened]
        for ws, _ in opened:
            await ws.close()
        return answers

    answers = asyncio.run(main())
    assert [a["type"] for a in answers[:2]] == ["ready", "ready"]
    assert answers[2]["code"] == "too_many_streams", answers[2]
    assert "max_streams_per_client=2" in answers[2]["detail"]


def test_a_trickling_stream_is_closed_for_lack_of_progress(fake):
    server = fake(stream_idle_timeout_s=2, stream_min_fps=1)

    async def trickle(every_s: float, seconds: float, end: bool) -> tuple[int | None, str | None, bool]:
        """Send a 1x1 frame every ``every_s`` for ``seconds``; (close code, last code, closed by the
        server while the client was still sending)."""
        ws, ready = await start(server.url, 1, 1)
        assert ready["type"] == "ready"
        closed_while_sending = False
        try:
            for _ in range(int(seconds / every_s)):
                await ws.send(b"\x80")  # one valid 1x1 gray8 frame
                await asyncio.sleep(every_s)
            if end:
                await ws.send(json.dumps({"type": "end"}))
        except ConnectionClosed:
            closed_while_sending = True
        last = None
        try:
            async with asyncio.timeout(5):
                async for m in ws:
                    if isinstance(m, str):
                        last = json.loads(m).get("code", "summary")
        except (ConnectionClosed, TimeoutError):
            pass
        await ws.close()
        return ws.close_code, last, closed_while_sending

    async def main():
        return await asyncio.gather(trickle(1.5, 12, end=False), trickle(0.1, 6, end=True))

    slow, steady = asyncio.run(main())
    assert slow == (1008, "idle_timeout", True), f"a stream making 0.67 valid frames/s was kept: {slow}"
    assert steady == (1000, "summary", False), f"a stream at 10 frames/s was not served to its end: {steady}"
