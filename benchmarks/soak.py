"""Soak: two 25 fps streams, steady REST uploads and a hostile mix against one server, quiet then hostile.

    .venv/bin/python -m benchmarks.soak --minutes 3
    .venv/bin/python -m benchmarks.soak --minutes 10 --name soak-10min

One ``echoseg serve`` process (the bundled model, default settings, an API key file) is run
through two phases of ``--minutes`` each (``--no-quiet``: the hostile phase only):

1. quiet: two WebSocket streams of ``--size`` (default 480x640) gray8 frames at 25 fps, each
   reconnecting after 250 frames, and one REST upload (32 frames, NPY) every 2 s, all with the
   ``good`` key;
2. hostile: the same, plus one hostile action a second, in turn: a video whose frames grow past
   the limit, DICOM with NaN frame time, a stalled body dropped after 1 s, a client that
   disconnects mid-body, an idle WebSocket dropped after 1 s, a WebSocket sending garbage, a
   truncated AVI, a WebSocket with ``fps: NaN``; and, without a key, an 8 MB header, an 8 MB URL,
   20,000 header lines, 300 connections that never send a request; with the ``hostile`` key, 16
   streams of 1x1 frames, one every 20 s (each closed for lack of progress, half refused by the
   per-key quota); a 5 MB string in a ``start`` field.

Reported per phase: RSS every second and its slope after the warm-up (least squares, MB per
minute), frames sent and answered on every stream, frames lost (sent on a stream that ended
normally, 1000, but never answered; a stream closed 1013 ``overloaded`` was refused, not lost),
closes by code, 5xx answers and 1011 closes, client-side p50/p99 stream latency (each good stream
on its own and together) and REST latency, what each hostile action got, and the server's own
error counters. ``comparison``: each good stream's hostile p99 over its quiet p99 (the target is
at most 2), frames lost in both phases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import socket
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


KEYS = {"good": "soak-good-8e1f0c2d3a4b5c6d7e8f9a0b1c2d3e4f", "hostile": "soak-hostile-1a2b3c4d5e6f7a8b9c0d"}


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


class Tally:
    def __init__(self) -> None:
        self.stream_latencies: list[float] = []
        self.per_stream: dict[int, list[float]] = {}
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


async def one_stream(
    url: str, tally: Tally, frames: list[bytes], fps: float, size: tuple[int, int], which: int = 0
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    sent_at: list[float] = []
    answered = 0
    latencies = tally.per_stream.setdefault(which, [])
    ws_url = url.replace("http", "ws") + "/v1/stream"
    async with connect(ws_url, max_size=2**26, additional_headers=bearer("good")) as ws:
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
                    latencies.append(tally.stream_latencies[-1])
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


async def stream_loop(
    url: str, tally: Tally, stop: float, fps: float, size: tuple[int, int], which: int
) -> None:
    frames = [f.tobytes() for f in disc_frames(250, *size)]
    while time.monotonic() < stop:
        try:
            await one_stream(url, tally, frames, fps, size, which)
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
                headers = {"Content-Type": "application/x-npy", **bearer("good")}
                resp = await client.post(f"{url}/v1/segment", content=body, headers=headers)
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
            headers = {"Content-Type": media, **bearer("hostile")}
            resp = await client.post(f"{url}/v1/segment", content=data, headers=headers)
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

        async with connect(
            url.replace("http", "ws") + "/v1/stream", additional_headers=bearer("hostile")
        ) as ws:
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

    def raw_head(parts) -> str:
        """An unauthenticated request head sent piece by piece; the status the server answered."""
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        with contextlib.closing(s):
            for part in parts:
                try:
                    s.sendall(part)
                except OSError:
                    break
            data = b""
            with contextlib.suppress(OSError):
                while chunk := s.recv(65536):
                    data += chunk
        return data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "no answer"

    chunk = b"a" * 65536
    huge_header = [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", *[chunk] * 128, b"\r\n\r\n"]
    huge_url = [b"GET /healthz?", *[chunk] * 128, b" HTTP/1.1\r\nHost: x\r\n\r\n"]
    many_lines = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"".join(b"X-%d: 1\r\n" % i for i in range(20000)),
        b"\r\n",
    ]

    async def silent_connections(n: int = 300, hold_s: float = 12.0) -> str:
        """``n`` connections that never send a request: how many the server closed within ``hold_s``."""
        socks = []
        for _ in range(n):
            with contextlib.suppress(OSError):
                socks.append(await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 10))
        await asyncio.sleep(hold_s)
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                closed += s.recv(1) == b""  # b"": closed by the server
            except BlockingIOError:  # still open
                pass
            except OSError:  # reset by the server
                closed += 1
            s.close()
        return f"{closed}/{len(socks)} closed"

    async def trickling_streams(n: int = 16, every_s: float = 20.0) -> str:
        """``n`` streams of 1x1 frames, one every ``every_s``; how each ended."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        async def one() -> str:
            async with connect(
                url.replace("http", "ws") + "/v1/stream", additional_headers=bearer("hostile")
            ) as ws:
                code = "?"
                try:
                    await ws.send(json.dumps({"type": "start", "width": 1, "height": 1}))
                    async with asyncio.timeout(120):
                        while True:
                            await ws.send(b"\x80")
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(every_s):
                                    async for m in ws:
                                        if isinstance(m, str) and json.loads(m).get("type") == "error":
                                            code = json.loads(m)["code"]
                except (ConnectionClosed, TimeoutError):
                    pass
                return f"{ws.close_code} {code}"

        ends = Counter(await asyncio.gather(*(one() for _ in range(n)), return_exceptions=False))
        return ", ".join(f"{k} x{v}" for k, v in sorted(ends.items()))

    big_start = json.dumps({"type": "start", "width": 8, "height": 8, "encoding": "x" * 5_000_000})

    return [
        ("huge_header_8mb", lambda: asyncio.to_thread(raw_head, huge_header)),
        ("silent_connections_300", silent_connections),
        ("trickling_streams_16", trickling_streams),
        ("huge_url_8mb", lambda: asyncio.to_thread(raw_head, huge_url)),
        ("header_lines_20000", lambda: asyncio.to_thread(raw_head, many_lines)),
        ("start_field_5mb", lambda: ws_exchange([big_start])),
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
    """One action a second, in turn; the long ones (silent connections, trickling streams) run in
    the background while the others go on; all end by ``stop`` (or soon after)."""
    actions = await asyncio.to_thread(hostile_actions, url, port)
    background: set[asyncio.Task] = set()

    async def run(name: str, action) -> None:
        try:
            outcome = await action()
        except Exception as e:
            outcome = type(e).__name__
        if outcome[:1] == "5":
            tally.http_5xx[int(outcome[:3])] += 1
        tally.ws_1011 += outcome == "1011"
        tally.hostile.setdefault(name, Counter())[outcome] += 1

    i = 0
    while time.monotonic() < stop:
        name, action = actions[i % len(actions)]
        i += 1
        t0 = time.perf_counter()
        if name.startswith(("silent_", "trickling_")):
            task = asyncio.create_task(run(name, action))
            background.add(task)
            task.add_done_callback(background.discard)
        else:
            await run(name, action)
        await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
    if background:
        await asyncio.wait(background, timeout=150)


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


def phase(url: str, port: int, pid: int, minutes: float, args: argparse.Namespace, hostile: bool) -> dict:
    tally = Tally()
    began = time.monotonic()
    stop = began + minutes * 60

    async def main() -> None:
        await asyncio.gather(
            rss_loop(pid, tally, stop, began),
            *(stream_loop(url, tally, stop, args.fps, args.size, k) for k in range(args.streams)),
            rest_loop(url, tally, stop, args.size),
            *([hostile_loop(url, port, tally, stop)] if hostile else []),
        )

    asyncio.run(main())
    warmup = min(60.0, minutes * 60 * 0.25)
    rss = [r for _, r in tally.rss]
    return {
        "hostile": hostile,
        "minutes": minutes,
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
            "latency_ms_per_stream": {str(k): pct_ms(v) for k, v in sorted(tally.per_stream.items())},
        },
        "rest": {
            "status": {str(k): v for k, v in tally.rest_status.items()},
            "latency_ms": pct_ms(tally.rest_latencies),
        },
        "hostile_actions": {k: dict(v) for k, v in tally.hostile.items()},
        "http_5xx": {str(k): v for k, v in tally.http_5xx.items()},
        "ws_1011": tally.ws_1011,
        "rss_samples": tally.rss,
    }


def compare(quiet: dict, hostile: dict) -> dict:
    """Each good stream's p99 under attack over its quiet p99 (target: at most 2)."""
    ratios = {}
    for k, q in quiet["stream"]["latency_ms_per_stream"].items():
        h = hostile["stream"]["latency_ms_per_stream"].get(k, {})
        if q.get("p99") and h.get("p99"):
            ratios[k] = round(h["p99"] / q["p99"], 2)
    return {
        "p99_ratio_per_stream": ratios,
        "p99_within_2x": bool(ratios) and all(r <= 2.0 for r in ratios.values()),
        "frames_lost": quiet["stream"]["frames_lost"] + hostile["stream"]["frames_lost"],
    }


def run(args: argparse.Namespace) -> dict:
    from service.core.keys import add_key

    log_dir = Path(tempfile.mkdtemp(prefix="echoseg-soak-"))
    keys = log_dir / "keys.json"
    add_key(keys, "good", KEYS["good"], ["segment", "stream", "read-metrics"])
    add_key(keys, "hostile", KEYS["hostile"], ["segment", "stream"])
    env = {"ECHOSEG_API_KEY_FILE": str(keys), **dict(args.env)}
    with serve_process(Path(args.model), log_dir / "server.log", env) as server:
        phases = {}
        if args.quiet:
            log.info("quiet phase: %.1f min", args.minutes)
            phases["quiet"] = phase(server.url, server.port, server.pid, args.minutes, args, hostile=False)
        log.info("hostile phase: %.1f min", args.minutes)
        phases["hostile"] = phase(server.url, server.port, server.pid, args.minutes, args, hostile=True)
        counters = server_counters(server.url)
        server_log = server.log()
    out = {
        "minutes_per_phase": args.minutes,
        "streams": args.streams,
        "fps": args.fps,
        "size": list(args.size),
    }
    if "quiet" in phases:
        out["comparison"] = compare(phases["quiet"], phases["hostile"])
    return {
        **out,
        "phases": phases,
        "server_counters": counters,
        "tracebacks_in_server_log": server_log.count("Traceback"),
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
    p.add_argument(
        "--no-quiet", dest="quiet", action="store_false", help="skip the quiet phase (no comparison)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.time()
    result = run(args)
    doc = document("soak", argv, started, settings={"env": dict(args.env)}, **result)
    path = write_result(doc, Path(args.out) if args.out else None, args.name)
    shown = {
        **result,
        "phases": {
            k: {f: v for f, v in ph.items() if f != "rss_samples"} for k, ph in result["phases"].items()
        },
    }
    print(json.dumps(shown, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
