"""The heavy variants of the fault suite: peak memory of hostile uploads and long streams, and the drain.

    .venv/bin/python -m benchmarks.faults                          # full sizes (a few minutes)
    .venv/bin/python -m benchmarks.faults --scale 0.25             # a quarter of the frames
    .venv/bin/python -m benchmarks.faults --cases stream --stream-frames 600

One ``echoseg serve`` process (the bundled model, default settings) takes each case in turn;
before each, its peak RSS is reset (``/proc/pid/clear_refs``) and its RSS read, so a case's
figure is what that one request added at its peak (``peak_above_idle_mb``) and what stayed after
(``after_above_idle_mb``). Cases (the red-team inputs of issue 14):

- ``growing``: H.264 whose frames grow from 64² to 4000² after the stream probe (refused, 413);
- ``mp4``: 500 frames of 1024² H.264 in a few dozen KB;
- ``dicom``: an RLE-compressed DICOM cine loop of 216 frames of 1024² (~4 MB);
- ``stream``: one 1024² gray8 stream of 3,000 frames sent as fast as the server takes them
  (flow control), RSS sampled every 250 frames, then ``end`` and its summary;
- ``drain``: a second server with ``--drain-timeout`` gets SIGTERM while a stream and an upload
  (a stalled body) are in flight; the time from the signal to the process exit is reported.

``--scale`` multiplies every frame count (to show how memory scales on a slow machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import struct
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import REPO, document, write_result
from benchmarks.hostile import (
    dicom_clip,
    disc_frames,
    growing_video,
    long_video,
    open_partial_upload,
    peak_rss_mb,
    read_status,
    reset_peak,
    rss_mb,
    serve_process,
)

log = logging.getLogger("benchmarks.faults")
CASES = ("growing", "mp4", "dicom", "stream", "drain")


def _measure(pid: int, run) -> dict:
    """Run ``run()`` and report the process's memory around it (MB above the RSS before)."""
    time.sleep(0.5)
    idle = rss_mb(pid)
    if not reset_peak(pid):
        raise RuntimeError("cannot reset the peak RSS (/proc/pid/clear_refs)")
    started = time.perf_counter()
    outcome = run()
    seconds = time.perf_counter() - started
    peak = peak_rss_mb(pid)
    time.sleep(0.5)
    return {
        "idle_rss_mb": round(idle, 1),
        "peak_above_idle_mb": round(peak - idle, 1),
        "after_above_idle_mb": round(rss_mb(pid) - idle, 1),
        "seconds": round(seconds, 2),
        **outcome,
    }


def _upload(url: str, data: bytes, media: str) -> dict:
    resp = httpx.post(f"{url}/v1/segment", content=data, headers={"Content-Type": media}, timeout=900)
    body = resp.json()
    out = {"status": resp.status_code, "body_bytes": len(data)}
    out.update({"frames": body["frames"]} if resp.status_code == 200 else {"code": body.get("code")})
    return out


async def stream_frames_lean(url: str, n: int, size: int, pid: int | None = None, every: int = 250) -> dict:
    """Send ``n`` gray8 ``size``² frames (50 distinct ones, cycled) with flow control; masks counted."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    frames = [f.tobytes() for f in disc_frames(50, size, size)]
    samples: list[tuple[int, float]] = []
    masks = 0
    summary = None
    async with connect(url.replace("http", "ws") + "/v1/stream", max_size=2**26) as ws:
        await ws.send(json.dumps({"type": "start", "width": size, "height": size, "fps": 25}))
        ready = json.loads(await ws.recv())
        credits = asyncio.Semaphore(int(ready["max_in_flight"]))

        async def sender() -> None:
            for i in range(n):
                await credits.acquire()
                await ws.send(frames[i % len(frames)])
                if pid is not None and i % every == 0:
                    samples.append((i, round(rss_mb(pid), 1)))
            await ws.send(json.dumps({"type": "end"}))

        task = asyncio.create_task(sender())
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    struct.unpack("<I", message[:4])
                    masks += 1
                    credits.release()
                else:
                    body = json.loads(message)
                    if body.get("type") == "summary":
                        summary = body
                    else:
                        log.info("stream error message: %s", body)
        except ConnectionClosed:
            pass
        task.cancel()
        close = ws.close_code
    return {
        "frames_sent": n,
        "masks": masks,
        "close_code": close,
        "summary_frames": summary["frames"] if summary else None,
        "summary_ef": summary["ef"] if summary else None,
        "rss_mb_by_frame": samples,
    }


def _drain_case(model: Path, log_dir: Path, drain_s: float) -> dict:
    env = {"ECHOSEG_DRAIN_TIMEOUT_S": str(drain_s), "ECHOSEG_BODY_IDLE_TIMEOUT_S": "600"}
    with serve_process(model, log_dir / "drain.log", env) as server:
        upload = open_partial_upload(server.port, 10_000_000, b"\x93NUMPY" + b"\x00" * 4096)

        async def main() -> tuple[dict, float, int | None]:
            stream = asyncio.create_task(stream_frames_lean(server.url, 10**6, 256))
            await asyncio.sleep(2.0)  # the stream is running, the upload's body is stalled
            exit_s = await asyncio.to_thread(server.terminate)
            status = await asyncio.to_thread(read_status, upload, 5)
            try:
                result = await asyncio.wait_for(stream, 10)
            except Exception as e:  # the stream ends with the connection
                result = {"error": type(e).__name__}
            return result, exit_s, status

        stream_result, exit_s, status = asyncio.run(main())
        upload.close()
        return {
            "drain_timeout_s": drain_s,
            "exit_after_sigterm_s": round(exit_s, 2),
            "within_timeout_plus_1s": exit_s <= drain_s + 1.0,
            "exit_code": server.process.returncode,
            "upload_status": status,
            "stream_close_code": stream_result.get("close_code"),
            "stream_masks_before_close": stream_result.get("masks"),
        }


def run(args: argparse.Namespace) -> dict:
    model = Path(args.model)
    scale = args.scale
    results: dict[str, dict] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="echoseg-faults-"))
    with serve_process(model, log_dir / "server.log", dict(args.env)) as server:
        url, pid = server.url, server.pid
        _upload(url, long_video(8, 256), "video/mp4")  # warm-up
        if "growing" in args.cases:
            data = growing_video(64, 4000)
            results["growing"] = _measure(pid, lambda: _upload(url, data, "video/mp4"))
        if "mp4" in args.cases:
            n = max(1, round(500 * scale))
            data = long_video(n, 1024)
            results["mp4"] = {
                "clip": f"{n}x1024x1024 H.264",
                **_measure(pid, lambda: _upload(url, data, "video/mp4")),
            }
        if "dicom" in args.cases:
            n = max(1, round(216 * scale))
            data = dicom_clip(disc_frames(n, 1024, 1024), rle=True)
            results["dicom"] = {
                "clip": f"{n}x1024x1024 RLE DICOM",
                **_measure(pid, lambda: _upload(url, data, "application/dicom")),
            }
        if "stream" in args.cases:
            n = args.stream_frames or max(1, round(3000 * scale))
            results["stream"] = {
                "stream": f"{n}x1024x1024 gray8",
                **_measure(pid, lambda: asyncio.run(stream_frames_lean(url, n, 1024, pid))),
            }
    if "drain" in args.cases:
        results["drain"] = _drain_case(model, log_dir, args.drain_timeout)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "default"))
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--scale", type=float, default=1.0, help="multiply every frame count")
    p.add_argument(
        "--stream-frames", type=int, default=0, help="frames of the stream case (default 3000*scale)"
    )
    p.add_argument("--drain-timeout", type=float, default=3.0)
    p.add_argument("--env", nargs="*", default=[], type=lambda kv: tuple(kv.split("=", 1)))
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--name", default="faults")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.time()
    results = run(args)
    doc = document(
        "faults", argv, started, settings={"scale": args.scale, "env": dict(args.env)}, cases=results
    )
    path = write_result(doc, Path(args.out) if args.out else None, args.name)
    print(json.dumps(results, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
