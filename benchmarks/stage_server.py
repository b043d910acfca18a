"""``echoseg serve`` with per-stage timers on the streaming path, for ``benchmarks.stages`` only.

    python -m benchmarks.stage_server serve --model lite.onnx --port 8123

The server is the product's own app (``service.main.create_app``, the same settings and the
same drain); only the names the stream session calls are wrapped with timers, and one extra
route, ``GET /bench/stages``, returns what was recorded (``DELETE`` clears it):

- ``arrivals``: when each binary frame message reached the session (``time.perf_counter``, the
  system's monotonic clock, which a client on the same machine shares);
- ``decode``, ``resize`` (resize + normalise), ``resize_back`` (sigmoid, resize, threshold),
  ``encode``: durations of those functions, ms;
- ``queue_wait``, ``inference``, ``batch``: each request's wait in the micro-batcher, the backend
  time of its batch, and the batch size;
- ``sends``: ``[frame index, start, end]`` of each mask message handed to the WebSocket.
"""

from __future__ import annotations

import argparse
import functools
import struct
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

RECORDS: dict[str, list] = defaultdict(list)
_LOCK = threading.Lock()


def _record(name: str, value) -> None:
    with _LOCK:
        RECORDS[name].append(value)


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _record(name, (time.perf_counter() - t0) * 1e3)

    return wrapper


def instrument() -> None:
    """Wrap the streaming path's stages with timers (module globals the session looks up)."""
    from starlette.websockets import WebSocket

    import service.batcher as batcher
    import service.stream as stream

    for attr, name in (
        ("decode_frame", "decode"),
        ("preprocess", "resize"),
        ("logits_to_masks", "resize_back"),
        ("encode_mask", "encode"),
    ):
        setattr(stream, attr, _timed(name, getattr(stream, attr)))

    receive = stream.StreamSession._receive

    async def timed_receive(self):
        msg = await receive(self)
        if msg.get("bytes") is not None:
            _record("arrivals", time.perf_counter())
        return msg

    stream.StreamSession._receive = timed_receive

    send_bytes = WebSocket.send_bytes

    async def timed_send_bytes(self, data: bytes) -> None:
        t0 = time.perf_counter()
        await send_bytes(self, data)
        _record("sends", [struct.unpack("<I", data[:4])[0], t0, time.perf_counter()])

    WebSocket.send_bytes = timed_send_bytes

    @dataclass
    class RecordedResult(batcher.BatchResult):
        def __post_init__(self) -> None:
            _record("queue_wait", self.queue_s * 1e3)
            _record("inference", self.inference_s * 1e3)
            _record("batch", self.batch_size)

    batcher.BatchResult = RecordedResult


def serve(model: str, host: str, port: int, overrides: dict) -> None:
    from service.core.config import Settings
    from service.main import create_app
    from service.server import DrainingServer, uvicorn_config

    instrument()
    settings = Settings(model=model, **overrides)
    app = create_app(settings)

    @app.get("/bench/stages")
    def stages() -> dict:
        with _LOCK:
            return {k: list(v) for k, v in RECORDS.items()}

    @app.delete("/bench/stages")
    def clear() -> dict:
        with _LOCK:
            RECORDS.clear()
        return {"cleared": True}

    DrainingServer(uvicorn_config(app, settings, host, port), app.state.service).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.stage_server", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["serve"])
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--backend", choices=["auto", "onnxruntime", "torch", "tensorrt"], default=None)
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("device", args.device), ("backend", args.backend)) if v is not None}
    serve(args.model, args.host, args.port, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
