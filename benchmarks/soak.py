"""Soak: two 25 fps streams, steady REST uploads and a hostile mix against one server, for a while.

    .venv/bin/python -m benchmarks.soak --minutes 3
    .venv/bin/python -m benchmarks.soak --minutes 10 --name soak-10min

One ``echoseg serve`` process (the bundled model, default settings) gets, at the same time:

- two WebSocket streams of ``--size`` (default 480x640) gray8 frames at 25 fps, each
  reconnecting after 250 frames;
- one REST upload (32 frames of the same size, NPY) every 2 s;
- one hostile action a second, in turn: a video whose frames grow past the limit, DICOM with
  NaN frame time, a stalled body dropped after 1 s, a client that disconnects mid-body, an idle
  WebSocket dropped after 1 s, a WebSocket sending garbage, a truncated AVI, a WebSocket with
  ``fps: NaN``.

Reported: RSS every second and its slope after the warm-up (least squares, MB per minute), frames
sent and answered on every stream, frames lost (sent on a stream that ended normally, 1000, but
never answered; a stream closed 1013 ``overloaded`` was refused, not lost), closes by code, 5xx
answers and 1011 closes, client-side p50/p99 stream latency and REST latency, what each hostile
action got, and the server's own error counters.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import REPO, document, write_result
from benchmarks.hostile import (
    dicom_clip,
    disc_frames,
    growing_video,
    open_partial_upload,
    rss_mb,
    serve_process,
    truncated_avi,
)

log = logging.getLogger("benchmarks.soak")


class Tally:
    def __init__(self) -> None:
        self.stream_latencies: list[float] = []
        self.rest_latencies: list[float] = []
        self.frames_sent = 0
        self.frames_answered = 0
        self.frames_lost = 0
        self.streams_done = 0
        self.stream_closes: Counter = Counter()
        self.rest_status: Counter = Counter()
        self.hostile: dict[str, Counter] = {}
        self.http_5xx: Counter = Counter()  # every 5xx answer, by status (503 = refused, overloaded)
        self.ws_1011 = 0
        self.rss: list[tuple[float, float]] = []


def npy_bytes(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, frames)
    return buf.getvalue()


async def one_stream(url: str, tally: Tally, frames: list[bytes], fps: float, size: tuple[int, int]) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    sent_at: list[float] = []
    answered = 0
    async with connect(url.replace("http", "ws") + "/v1/stream", max_size=2**26) as ws:
        h, w = size
        await ws.send(json.dumps({"type": "start", "width": w, "height": h, "fps": fps}))
        ready = json.loads(await ws.recv())
        lookahead = int(ready["lookahead_frames"])

        async def sender() -> None:
            t0 = time.perf_counter()
            for i, payload in enumerate(frames):
                await asyncio.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
                sent_at.append(time.perf_counter())
                await ws.send(payload)
            sent_at.append(time.perf_counter())
            await ws.send(json.dumps({"type": "end"}))

        task = asyncio.create_task(sender())
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    (index,) = struct.unpack("<I", message[:4])
                    need = min(index + lookahead, len(sent_at) - 1)
                    tally.stream_latencies.append(time.perf_counter() - sent_at[need])
                    answered += 1
        except ConnectionClosed:  # closed with an error code (e.g. 1013 overloaded): recorded below
            pass
        finally:
            task.cancel()
        code = ws.close_code
    tally.stream_closes[code] += 1
    tally.frames_sent += min(len(sent_at), len(frames))
    tally.frames_answered += answered
    if code == 1000:
        tally.frames_lost += len(frames) - answered
    if code == 1011:
        tally.ws_1011 += 1


async def stream_loop(url: str, tally: Tally, stop: float, fps: float, size: tuple[int, int]) -> None:
    frames = [f.tobytes() for f in disc_frames(250, *size)]
    while time.monotonic() < stop:
        try:
            await one_stream(url, tally, frames, fps, size)
            tally.streams_done += 1
        except Exception as e:  # a broken connection is counted, the loop goes on
            tally.stream_closes[type(e).__name__] += 1
            await asyncio.sleep(0.5)


async def rest_loop(url: str, tally: Tally, stop: float, size: tuple[int, int]) -> None:
    body = npy_bytes(disc_frames(32, *size))
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                resp = await client.post(
                    f"{url}/v1/segment", content=body, headers={"Content-Type": "application/x-npy"}
                )
                tally.rest_status[resp.status_code] += 1
                if resp.status_code >= 500:
                    tally.http_5xx[resp.status_code] += 1
                if resp.status_code == 200:
                    tally.rest_latencies.append(time.perf_counter() - t0)
            except httpx.HTTPError as e:
                tally.rest_status[type(e).__name__] += 1
            await asyncio.sleep(max(0.0, 2.0 - (time.perf_counter() - t0)))


def hostile_actions(url: str, port: int) -> list[tuple[str, object]]:
    growing = growing_video(64, 2048, small_frames=150, large_frames=2)
    bad_dicom = dicom_clip(disc_frames(4, 64, 64), fields={"FrameTime": "NaN"})
    truncated, _ = truncated_avi(30, keep=0.5)

    async def post(data: bytes, media: str) -> str:
        async with httpx.AsyncClient(timeout=60) as client:
            resp = await client.post(f"{url}/v1/segment", content=data, headers={"Content-Type": media})
            return f"{resp.status_code} {resp.json().get('code', 'ok')}"

    async def stalled() -> str:
        s = await asyncio.to_thread(open_partial_upload, port, 1_000_000, b"\x93NUMPY")
        await asyncio.sleep(1.0)
        s.close()
        return "dropped"

    async def disconnect_mid_body() -> str:
        s = await asyncio.to_thread(open_partial_upload, port, 1_000_000, b"\x93NUMPY" + b"\x00" * 5000)
        s.close()
        return "closed"

    async def ws_exchange(messages: list, hold_s: float = 0.0) -> str:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        async with connect(url.replace("http", "ws") + "/v1/stream") as ws:
            for m in messages:
                await ws.send(m)
            if hold_s:
                await asyncio.sleep(hold_s)
                return "dropped"
            try:
                async with asyncio.timeout(10):
                    async for _ in ws:
                        pass
            except (ConnectionClosed, TimeoutError):
                pass
            return str(ws.close_code)

    return [
        ("growing_video", lambda: post(growing, "video/mp4")),
        ("dicom_nan_frame_time", lambda: post(bad_dicom, "application/dicom")),
        ("stalled_body", stalled),
        ("disconnect_mid_body", disconnect_mid_body),
        ("idle_websocket", lambda: ws_exchange([], hold_s=1.0)),
        ("websocket_garbage", lambda: ws_exchange(["{not json", b"\x00" * 10])),
        ("truncated_avi", lambda: post(truncated, "video/x-msvideo")),
        ("websocket_fps_nan", lambda: ws_exchange(['{"type":"start","width":8,"height":8,"fps":NaN}'])),
    ]


async def hostile_loop(url: str, port: int, tally: Tally, stop: float) -> None:
    actions = await asyncio.to_thread(hostile_actions, url, port)
    i = 0
    while time.monotonic() < stop:
        name, action = actions[i % len(actions)]
        i += 1
        t0 = time.perf_counter()
        try:
            outcome = await action()
        except Exception as e:
            outcome = type(e).__name__
        if outcome[:1] == "5":
            tally.http_5xx[int(outcome[:3])] += 1
        tally.ws_1011 += outcome == "1011"
        tally.hostile.setdefault(name, Counter())[outcome] += 1
        await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))


async def rss_loop(pid: int, tally: Tally, stop: float, began: float) -> None:
    while time.monotonic() < stop:
        tally.rss.append((round(time.monotonic() - began, 1), round(rss_mb(pid), 1)))
        await asyncio.sleep(1.0)


def slope_mb_per_min(samples: list[tuple[float, float]], warmup_s: float) -> float | None:
    pts = [(t, r) for t, r in samples if t >= warmup_s]
    if len(pts) < 10:
        return None
    t, r = np.array(pts).T
    return round(float(np.polyfit(t / 60.0, r, 1)[0]), 2)


def pct_ms(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values) * 1000
    return {
        "n": len(values),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
    }


def server_counters(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "echoseg_errors_total" and s.value:
                out[f"errors{{code={s.labels['code']}}}"] = s.value
            if s.name == "echoseg_http_requests_total" and s.labels["status"].startswith("5") and s.value:
                out[f"http{{{s.labels['route']},{s.labels['status']}}}"] = s.value
    return out


def run(args: argparse.Namespace) -> dict:
    tally = Tally()
    log_dir = Path(tempfile.mkdtemp(prefix="echoseg-soak-"))
    with serve_process(Path(args.model), log_dir / "server.log", dict(args.env)) as server:
        began = time.monotonic()
        stop = began + args.minutes * 60

        async def main() -> None:
            await asyncio.gather(
                rss_loop(server.pid, tally, stop, began),
                *(stream_loop(server.url, tally, stop, args.fps, args.size) for _ in range(args.streams)),
                rest_loop(server.url, tally, stop, args.size),
                hostile_loop(server.url, server.port, tally, stop),
            )

        asyncio.run(main())
        counters = server_counters(server.url)
        server_log = server.log()
    warmup = min(60.0, args.minutes * 60 * 0.25)
    rss = [r for _, r in tally.rss]
    return {
        "minutes": args.minutes,
        "streams": args.streams,
        "fps": args.fps,
        "size": list(args.size),
        "rss_mb": {
            "start": rss[0] if rss else None,
            "after_warmup": next((r for t, r in tally.rss if t >= warmup), None),
            "end": rss[-1] if rss else None,
            "max": max(rss) if rss else None,
            "slope_after_warmup_mb_per_min": slope_mb_per_min(tally.rss, warmup),
            "warmup_s": warmup,
        },
        "stream": {
            "completed": tally.streams_done,
            "frames_sent": tally.frames_sent,
            "frames_answered": tally.frames_answered,
            "frames_lost": tally.frames_lost,
            "closes": {str(k): v for k, v in tally.stream_closes.items()},
            "latency_ms": pct_ms(tally.stream_latencies),
        },
        "rest": {
            "status": {str(k): v for k, v in tally.rest_status.items()},
            "latency_ms": pct_ms(tally.rest_latencies),
        },
        "hostile": {k: dict(v) for k, v in tally.hostile.items()},
        "http_5xx": {str(k): v for k, v in tally.http_5xx.items()},
        "ws_1011": tally.ws_1011,
        "server_counters": counters,
        "tracebacks_in_server_log": server_log.count("Traceback"),
        "rss_samples": tally.rss,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "default"))
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument(
        "--size", type=lambda v: tuple(int(x) for x in v.split("x")), default=(480, 640), help="HxW frames"
    )
    p.add_argument("--env", nargs="*", default=[], type=lambda kv: tuple(kv.split("=", 1)))
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--name", default="soak")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.time()
    result = run(args)
    doc = document("soak", argv, started, settings={"env": dict(args.env)}, **result)
    path = write_result(doc, Path(args.out) if args.out else None, args.name)
    shown = {k: v for k, v in result.items() if k != "rss_samples"}
    print(json.dumps(shown, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
