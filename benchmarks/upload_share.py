"""An upload's latency while streams saturate the backend, with and without the uploads' reserved share.

    .venv/bin/python -m benchmarks.upload_share                     # shares 0 and 0.25 (about a minute)
    .venv/bin/python -m benchmarks.upload_share --shares 0 0.1 0.25 --load 0.95

The service's own micro-batcher (``service.batcher.MicroBatcher``) in front of a backend that
sleeps what a batch would cost (``--base-ms`` + ``--per-window-ms`` a window; sleeping, so the
figures do not depend on how busy this shared machine is). ``--streams`` streams each submit one
real-time window every 1/``--fps`` s, paced like a scanner (they do not wait for their masks),
which keeps the backend ``--load`` busy on their own. Per share: the streams run alone for
``--quiet-s`` (their mask latency p50/p99), then an upload of ``--upload-frames`` windows is sent
as the service sends one (chunks of ``max_batch``, two in flight): how long it took, the streams'
latency while it ran, and in the ``--quiet-s`` after it. Share 0 is the rule before the reserved
slice (streams always first). All shares run in one process, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import document, write_result
from service.batcher import MicroBatcher
from service.core.metrics import Metrics


class SleepBackend:
    """What the batcher needs of a backend; a batch of B windows takes ``base + B * per_window`` s."""

    name = "sleep"

    def __init__(self, base_s: float, per_window_s: float) -> None:
        self.base_s, self.per_window_s = base_s, per_window_s

    def infer(self, windows: np.ndarray) -> np.ndarray:  # (B, k, S, S) -> (B, 1, S, S)
        time.sleep(self.base_s + self.per_window_s * windows.shape[0])
        return np.zeros((windows.shape[0], 1, *windows.shape[2:]), np.float32)


def _pct(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ms = np.asarray(values) * 1e3
    p50, p99 = (round(float(np.percentile(ms, q)), 1) for q in (50, 99))
    return {"n": len(values), "p50_ms": p50, "p99_ms": p99}


async def _one_share(args: argparse.Namespace, share: float) -> dict:
    per_window = args.per_window_ms / 1e3
    backend = SleepBackend(args.base_ms / 1e3, per_window)
    batcher = MicroBatcher(backend, Metrics(), args.max_batch, 0.0015, lambda: args.streams, share)
    batcher.start()
    window = np.zeros((1, 3, 8, 8), np.float32)
    chunk = np.zeros((args.max_batch, 3, 8, 8), np.float32)
    latencies: list[tuple[float, float]] = []  # (sent, latency)
    stop = asyncio.Event()
    tasks: set[asyncio.Task] = set()
    loop = asyncio.get_running_loop()

    async def frame() -> None:
        sent = loop.time()
        await batcher.submit(window, realtime=True)
        latencies.append((sent, loop.time() - sent))

    async def stream(offset: float) -> None:
        await asyncio.sleep(offset)
        nxt = loop.time()
        while not stop.is_set():
            task = asyncio.create_task(frame())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            nxt += 1.0 / args.fps
            await asyncio.sleep(max(0.0, nxt - loop.time()))

    streams = [asyncio.create_task(stream(i / args.fps / args.streams)) for i in range(args.streams)]
    await asyncio.sleep(args.quiet_s)
    upload_started = loop.time()
    in_flight = asyncio.Semaphore(2)

    async def send(n: int) -> None:
        async with in_flight:
            await batcher.submit(chunk[:n])

    sizes = [
        min(args.max_batch, args.upload_frames - i) for i in range(0, args.upload_frames, args.max_batch)
    ]
    try:
        async with asyncio.timeout(args.upload_timeout_s):
            await asyncio.gather(*(send(n) for n in sizes))
        upload_s: float | None = loop.time() - upload_started
    except TimeoutError:
        upload_s = None
    upload_ended = loop.time()
    await asyncio.sleep(args.quiet_s)
    stop.set()
    await asyncio.gather(*streams)
    await asyncio.gather(*list(tasks), return_exceptions=True)
    batcher.close()

    def sent_between(a: float, b: float) -> list[float]:
        return [lat for sent, lat in latencies if a <= sent < b]

    return {
        "upload_share": share,
        "upload_s": None if upload_s is None else round(upload_s, 2),
        "upload_timed_out": upload_s is None,
        "streams_quiet": _pct(sent_between(upload_started - args.quiet_s + 1.0, upload_started)),
        "streams_during_upload": _pct(sent_between(upload_started, upload_ended)),
        "streams_after_upload": _pct(sent_between(upload_ended, upload_ended + args.quiet_s)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shares", nargs="+", type=float, default=[0.0, 0.25])
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--load", type=float, default=0.9, help="backend share the streams need on their own")
    p.add_argument("--base-ms", type=float, default=4.0, help="cost of a batch, besides its windows")
    p.add_argument("--upload-frames", type=int, default=80)
    p.add_argument("--upload-timeout-s", type=float, default=20.0)
    p.add_argument("--quiet-s", type=float, default=4.0)
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    # full batches of max_batch windows, one per 1/fps s for every max_batch streams, at ``load``
    batch_s = args.load * args.max_batch / (args.streams * args.fps)
    args.per_window_ms = max(0.0, (batch_s * 1e3 - args.base_ms) / args.max_batch)
    started = time.time()
    rows = [asyncio.run(_one_share(args, share)) for share in args.shares]
    doc = document(
        "upload_share",
        argv,
        started,
        settings={k: v for k, v in vars(args).items() if k != "out"},
        rows=rows,
    )
    path = write_result(doc, Path(args.out) if args.out else None)
    print(json.dumps(rows, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
