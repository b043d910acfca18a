"""One WebSocket stream: the start/ready/frames/masks/end protocol of docs/service.md.

Two tasks per connection: the receiver decodes frames, builds each target frame's window and
queues it on the micro-batcher at once; the sender awaits results in frame order, encodes each
mask at the client's resolution and sends it. Between them sits a bounded queue: when a client
sends faster than the server serves (or reads its masks too slowly), the queue fills and the
stream is closed with ``overloaded`` (1013) instead of buffering without limit. The batcher
never waits for a sender, so a slow reader cannot stall other streams.

Real clips: the ultrasound region comes from ``start`` (``region``), else it is chosen once
from the stream's first frames (:meth:`StreamSession.detect_frames` of them are held for that:
the frames an upload chooses from, and the same rule, the model judging where the candidates
disagree; so a clip reaches the same region both ways). Each mask carries its
frame's flag and confidence when the client asked for ``mask_format: 2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import struct
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from fastapi import WebSocket
from starlette.websockets import WebSocketState

from echoseg.arbitration import first_frames
from echoseg.preprocess import StreamWindows, preprocess
from echoseg.quality import FLAG_CODES, FLAGS, FrameQuality, QualityThresholds
from echoseg.region import Region, region_from_json
from service.codecs.clip import MAX_FPS
from service.codecs.frames import (
    FRAME_ENCODINGS,
    MASK_ENCODINGS,
    decode_frame,
    decode_mask,
    encode_mask,
    png_1bit,
)
from service.core.errors import WS_NORMAL, ServiceError
from service.core.keys import Principal
from service.core.stages import timed
from service.readout import Readout, gated_summary
from service.regions import choose_region_judged
from service.state import Service

log = logging.getLogger(__name__)

_END = object()
SEND_TIMEOUT_S = 2.0  # for the final error/close messages to a client that may not read
SUMMARY_MASK_BYTES = 32 * 2**20  # compressed masks one stream keeps for its summary's EF


class _Disconnected(Exception):
    pass


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class StartParams:
    width: int
    height: int
    encoding: str
    mask_encoding: str
    fps: float | None
    region: Region | None = None  # given by the client; None: detected from the first frames
    mask_format: int = 1  # 1: index + mask; 2: index + flag + confidence + mask


MASK_FORMATS = (1, 2)


def _json_int(value):
    """A JSON integer as an ``int``: ``160`` and ``160.0`` alike (JSON Schema's ``integer`` counts
    a number with a zero fraction as one, so a schema-valid client may send either); anything else
    unchanged, for the caller to refuse."""
    if isinstance(value, float) and value.is_integer():  # False for inf and nan
        return int(value)
    return value


def _region_ints(region):
    """The start's ``region`` with its integer fields (x0, y0, x1, y1, the fan's points) as ints."""
    if not isinstance(region, dict):
        return region
    out = {k: _json_int(v) for k, v in region.items()}
    fan = out.get("fan")
    if isinstance(fan, list):
        out["fan"] = [[_json_int(c) for c in p] if isinstance(p, list) else p for p in fan]
    return out


def parse_start(msg: dict, max_width: int, max_height: int) -> StartParams:
    """Validate a ``start`` message; raise ``invalid_start`` / ``dimensions_too_large``.

    Integer fields take any JSON number with a zero fraction (``"width": 160.0``), as the
    AsyncAPI schema's ``type: integer`` allows; ``160.5``, ``"160"`` and ``true`` are refused."""
    w, h = _json_int(msg.get("width")), _json_int(msg.get("height"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
        raise ServiceError("invalid_start", "start needs positive integer 'width' and 'height'")
    if w > max_width or h > max_height:
        raise ServiceError(
            "dimensions_too_large", f"{w}x{h} frames exceed the limit {max_width}x{max_height}"
        )
    enc, menc = msg.get("encoding", "gray8"), msg.get("mask_encoding", "png")
    if enc not in FRAME_ENCODINGS:
        raise ServiceError("invalid_start", f"encoding must be one of {list(FRAME_ENCODINGS)}, got {enc!r}")
    if menc not in MASK_ENCODINGS:
        raise ServiceError(
            "invalid_start", f"mask_encoding must be one of {list(MASK_ENCODINGS)}, got {menc!r}"
        )
    fps = msg.get("fps")
    valid = isinstance(fps, int | float) and not isinstance(fps, bool) and math.isfinite(fps)
    if fps is not None and not (valid and 0 < fps <= MAX_FPS):
        raise ServiceError("invalid_start", f"fps must be a finite number in (0, {MAX_FPS:g}], got {fps!r}")
    mask_format = _json_int(msg.get("mask_format", 1))
    if mask_format not in MASK_FORMATS or isinstance(mask_format, bool):
        raise ServiceError(
            "invalid_start", f"mask_format must be one of {list(MASK_FORMATS)}, got {mask_format!r}"
        )
    region = None
    if msg.get("region") is not None:
        try:
            region = region_from_json(_region_ints(msg["region"]), h, w)
        except ValueError as e:
            raise ServiceError("invalid_start", f"{e} (the frames are {w}x{h})") from None
    return StartParams(w, h, enc, menc, float(fps) if fps else None, region, mask_format)


MAX_CONTROL_CHARS = 64 * 1024  # a text message (start, end) is a few hundred characters


def check_control_size(text: str) -> None:
    """Refuse a text message too long to be a control message before it is parsed or quoted."""
    if len(text) > MAX_CONTROL_CHARS:
        raise ServiceError(
            "frame_too_large", f"a text message of {len(text)} characters; at most {MAX_CONTROL_CHARS}"
        )


def parse_control(text: str) -> dict:
    """A text message -> JSON object with a ``type``; raise ``invalid_json`` otherwise."""
    check_control_size(text)
    try:
        msg = json.loads(text)
    except ValueError:
        raise ServiceError("invalid_json", "text messages must be JSON objects") from None
    if not isinstance(msg, dict):
        raise ServiceError("invalid_json", "text messages must be JSON objects")
    return msg


class StreamSummary:
    """What a stream keeps for its ``summary`` message: per-frame areas, flags and each mask as a
    1-bit PNG (a few KB for an LV mask), at most ``max_frames`` of them and SUMMARY_MASK_BYTES in
    all; only the ED/ES masks are decoded again, for their volumes. Memory stays flat however long
    the stream."""

    def __init__(self, max_frames: int, limits: QualityThresholds) -> None:
        self.max_frames = max_frames
        self.limits = limits
        self._areas: deque[float] = deque()
        self._masks: deque[bytes] = deque()
        self._flags: deque[FrameQuality] = deque()
        self._mask_bytes = 0

    def keep(self, area: float, png: bytes, quality: FrameQuality) -> None:
        self._areas.append(area)
        self._masks.append(png)
        self._flags.append(quality)
        self._mask_bytes += len(png)
        while len(self._masks) > self.max_frames or (
            self._mask_bytes > SUMMARY_MASK_BYTES and len(self._masks) > 1
        ):
            self._areas.popleft()
            self._flags.popleft()
            self._mask_bytes -= len(self._masks.popleft())

    def message(self, sent: int, start: StartParams, region: Region | None) -> dict:
        """The ``summary`` message after ``sent`` masks: it covers the latest frames only."""
        first = sent - len(self._areas)
        masks = list(self._masks)

        def mask_at(i: int) -> np.ndarray:
            return decode_mask(masks[i], "png", start.width, start.height)

        areas = np.asarray(self._areas, np.float64)
        cardiac, quality = gated_summary(areas, mask_at, self._flags, self.limits, fps=start.fps)
        shift = lambda xs: [first + x for x in xs]  # noqa: E731
        beats = [{**b, "ed": first + b["ed"], "es": first + b["es"]} for b in cardiac.get("beats", [])]
        return {
            "type": "summary",
            "frames": sent,
            "first_frame": first,
            "ed_frames": shift(cardiac.get("ed_frames", [])),
            "es_frames": shift(cardiac.get("es_frames", [])),
            "beats": beats,
            "ef": cardiac.get("ef"),
            "ef_null_reason": cardiac["ef_null_reason"],
            "area": [round(a, 1) for a in self._areas],
            "area_unit": "pixel",
            "volume_unit": "pixel3",
            "region": region.to_dict() if region is not None else None,
            "quality": quality.block(),
        }


class StreamSession:
    """One stream of an authenticated caller (the route authenticates and hands ``principal`` over)."""

    def __init__(self, websocket: WebSocket, service: Service, principal: Principal | None = None) -> None:
        self.ws = websocket
        self.service = service
        self.settings = service.settings
        self.metrics = service.metrics
        self.hook = service.stage_hook
        self.received = 0
        self.sent = 0
        self._tasks: list[asyncio.Task] = []
        self._serve_task: asyncio.Task | None = None
        self._pending: asyncio.Queue | None = None
        self._closing: ServiceError | None = None  # set by the drain or a key revocation
        self.principal = principal or Principal("none", "anonymous", frozenset())
        self.caller = ""  # whose share of the streams this one counts against
        self.bytes_in = 0
        self.outcome: tuple[str, str | None, int | None] = ("client_closed", None, None)
        self._finished = asyncio.Event()
        self._summary = StreamSummary(self.settings.stream_summary_frames, self.settings.quality_thresholds)
        self.region: Region | None = None  # the region in use, once known
        self._readout: Readout | None = None  # reads the masks and flags, once the region is known
        self._held: list[tuple[np.ndarray, float]] = []  # (frame, arrival) until the region is known

    @property
    def detect_frames(self) -> int:
        """Frames held for choosing the region: no more than the first window needs anyway (the
        target frame and its lookahead), so holding them adds no wait and a client that waits for
        each mask before sending the next frame never waits for a mask that waits for it. Uploads
        choose from the same frames (``echoseg.arbitration.first_frames``)."""
        return first_frames(self.service.backend.config.lookahead, self.settings.region_frames)

    # -- entry point ---------------------------------------------------------------------------
    async def run(self, refused: ServiceError | None = None) -> None:
        """Serve the stream; ``refused``: the route did not authenticate the caller, who is told
        why after the handshake (as every stream error is), and the refusal is audited."""
        began = time.perf_counter()
        await self.ws.accept()
        try:
            if refused is not None:
                raise refused
            self._admit()
        except ServiceError as err:
            await self._fail(err)
            self._audit(began)
            return
        self.service.streams.add(self)
        self.metrics.active_streams.inc()
        self._serve_task = asyncio.create_task(self._serve())
        try:
            await self._serve_task
        finally:
            self.service.streams.discard(self)
            self.metrics.active_streams.dec()
            dropped = self.received - self.sent
            if dropped > 0:
                self.metrics.frames.labels("dropped").inc(dropped)
            self._finished.set()
            self._audit(began)

    def _audit(self, began: float) -> None:
        outcome, error, close = self.outcome
        backend = self.service.backend
        self.service.audit.record(
            "stream",
            self.principal,
            tls=self.ws.url.scheme == "wss",
            route="/v1/stream",
            status=close,
            outcome=outcome,
            error=error,
            bytes_in=self.bytes_in,
            frames=self.received,
            duration_ms=round((time.perf_counter() - began) * 1e3, 2),
            model_id=backend.model_id if backend is not None else None,
        )

    def _admit(self) -> None:
        self.service.require_ready()
        if len(self.service.streams) >= self.settings.max_streams:
            raise ServiceError(
                "too_many_streams", f"max_streams={self.settings.max_streams} streams are open"
            )
        # one caller's share: its key or certificate, or its address when anonymous
        client = self.ws.client.host if self.ws.client else "?"
        self.caller = self.principal.name if self.principal.kind != "none" else f"address {client}"
        quota = self.settings.max_streams_per_client
        if sum(s.caller == self.caller for s in self.service.streams) >= quota:
            raise ServiceError(
                "too_many_streams", f"{self.caller} already holds max_streams_per_client={quota} streams"
            )

    def _progress_deadline(self, deadline: float) -> float:
        """After a valid frame: each buys 1/stream_min_fps s, banked up to stream_idle_timeout_s."""
        s = self.settings
        limit = time.monotonic() + s.stream_idle_timeout_s
        return limit if s.stream_min_fps <= 0 else min(limit, deadline + 1.0 / s.stream_min_fps)

    async def _serve(self) -> None:
        try:
            start = await self._receive_start()
            backend, batcher = self.service.require_ready()
            await self.ws.send_json({"type": "ready", **self._ready_body(start, backend)})
            pending: asyncio.Queue = asyncio.Queue(maxsize=self.settings.stream_queue)
            self._pending = pending
            recv = asyncio.create_task(self._receive_loop(start, pending, backend, batcher))
            send = asyncio.create_task(self._send_loop(start, pending))
            self._tasks = [recv, send]
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in self._tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()
            if self._closing is not None:
                raise self._closing
        except ServiceError as err:
            await self._fail(err)
        except _Disconnected:
            log.info("stream client disconnected after %d frames", self.received)
        except asyncio.CancelledError:
            if self._closing is None:
                raise
            asyncio.current_task().uncancel()
            await self._fail(self._closing)
        except Exception:
            log.exception("stream failed")
            self.metrics.frames.labels("error").inc(max(0, self.received - self.sent))
            self.sent = self.received  # counted as error, not dropped
            await self._fail(ServiceError("internal", "an unexpected server error"))
        finally:
            for task in self._tasks:
                task.cancel()
                task.add_done_callback(_retrieve)  # its error, if any, was handled above or is moot
            self._cancel_pending()

    def _cancel_pending(self) -> None:
        """Windows still queued for a stream that ended are dropped by the batcher, not inferred."""
        while self._pending is not None and not self._pending.empty():
            item = self._pending.get_nowait()
            if item is not _END:
                item[2].cancel()

    async def close_for_shutdown(self, code: int) -> None:
        """Called by the drain: end this stream with ``shutting_down`` and close ``code`` (1001)."""
        await self.close_with(
            ServiceError("shutting_down", "the server is shutting down; reconnect to another replica")
        )

    async def close_with(self, err: ServiceError) -> None:
        """End this stream now with ``err`` (its error message, then its close code): the drain,
        or a revoked key. Masks already sent stay sent; frames in flight are dropped."""
        if self._closing is not None:
            return
        self._closing = err
        if self._serve_task is not None:
            self._serve_task.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._finished.wait(), SEND_TIMEOUT_S * 2)

    # -- receiving -----------------------------------------------------------------------------
    async def _receive(self, timeout_s: float, code: str, detail: str = "") -> dict:
        try:
            msg = await asyncio.wait_for(self.ws.receive(), timeout_s)
        except TimeoutError:
            raise ServiceError(code, detail or f"no start within {timeout_s:g} s") from None
        if msg["type"] == "websocket.disconnect":
            raise _Disconnected()
        return msg

    async def _receive_start(self) -> StartParams:
        msg = await self._receive(self.settings.stream_start_timeout_s, "start_timeout")
        if msg.get("bytes") is not None:
            raise ServiceError("binary_before_start", "send a start message before any frame")
        control = parse_control(msg.get("text") or "")
        kind = control.get("type")
        if kind != "start":
            if kind == "end":
                raise ServiceError("invalid_start", "the first message must be start")
            raise ServiceError("unknown_message_type", f"unknown message type {kind!r}; expected 'start'")
        return parse_start(control, self.settings.max_frame_width, self.settings.max_frame_height)

    def _ready_body(self, start: StartParams, backend) -> dict:
        info = backend.info()
        return {
            "width": start.width,
            "height": start.height,
            "encoding": start.encoding,
            "mask_encoding": start.mask_encoding,
            "mask_format": start.mask_format,
            "flags": list(FLAGS),
            "region": start.region.to_dict() if start.region is not None else None,
            "region_frames": 0 if start.region is not None else self.detect_frames,
            "lookahead_frames": info["lookahead_frames"],
            "model": info,
            "max_in_flight": self.settings.stream_queue,
            "budget_ms": self.settings.budget_ms,
            **({"key_id": self.principal.id} if self.principal.kind == "key" else {}),
        }

    async def _receive_loop(self, start: StartParams, pending: asyncio.Queue, backend, batcher) -> None:
        windows = StreamWindows(backend.config)
        if start.region is not None:
            self._use_region(start.region, backend.config)
        s = self.settings
        slow = (
            f"no valid frame for stream_idle_timeout_s={s.stream_idle_timeout_s:g} s, or fewer than "
            f"stream_min_fps={s.stream_min_fps:g} a second"
        )
        deadline = time.monotonic() + s.stream_idle_timeout_s  # moved on by valid frames only
        while True:
            msg = await self._receive(max(0.0, deadline - time.monotonic()), "idle_timeout", slow)
            arrival = time.perf_counter()
            payload = msg.get("bytes")
            if payload is not None:
                self.bytes_in += len(payload)
                if self.hook is not None:
                    self.hook("arrivals", arrival)
            if payload is None:
                control = self._control_after_start(msg.get("text") or "")
                if control == "end":
                    if self._held:
                        await self._release_held(pending, batcher, windows, backend.config)
                    for target, window in windows.finish():
                        self._enqueue(pending, batcher, target, window, arrival)
                    await pending.put(_END)
                    return
                continue
            frame = await self._decode(payload, start)
            self.received += 1
            deadline = self._progress_deadline(deadline)
            if self.region is None:  # held until the region is detected from the first frames
                self._held.append((frame, arrival))
                if len(self._held) >= self.detect_frames:
                    await self._release_held(pending, batcher, windows, backend.config)
                continue
            self._push(frame, arrival, pending, batcher, windows, backend.config)

    def _push(self, frame: np.ndarray, arrival: float, pending, batcher, windows, config) -> None:
        # (H, W) -> (S, S)
        norm = timed(self.hook, "resize", preprocess, frame[None], config, self.region)[0]
        for target, window in windows.push(norm):
            self._enqueue(pending, batcher, target, window, arrival)

    def _use_region(self, region: Region, config) -> None:
        self.region = region
        self._readout = Readout.within(region, config, self.settings.quality_thresholds)

    async def _release_held(self, pending, batcher, windows, config) -> None:
        """Choose the region from the held frames (once per stream, off the event loop; the model
        judges candidates on the batcher's thread), then process them."""
        held, self._held = self._held, []
        first = np.stack([f for f, _ in held])
        loop = asyncio.get_running_loop()
        args = (first, None, None, batcher, loop, self.settings, True)
        _, region, _ = await asyncio.to_thread(timed, self.hook, "region", choose_region_judged, *args)
        self._use_region(region, config)
        for frame, arrival in held:
            self._push(frame, arrival, pending, batcher, windows, config)

    def _control_after_start(self, text: str) -> str:
        check_control_size(text)
        try:
            control = json.loads(text)
        except ValueError:
            raise ServiceError("expected_binary", "after start, frames must be binary messages") from None
        if not isinstance(control, dict):
            raise ServiceError("invalid_json", "text messages must be JSON objects")
        kind = control.get("type")
        if kind == "end":
            return "end"
        if kind == "start":
            raise ServiceError("invalid_start", "the stream has already started")
        raise ServiceError("unknown_message_type", f"unknown message type {kind!r}; expected 'end'")

    async def _decode(self, payload: bytes, start: StartParams) -> np.ndarray:
        args = (payload, start.encoding, start.width, start.height)
        if start.encoding == "gray8":
            return timed(self.hook, "decode", decode_frame, *args)
        return await asyncio.to_thread(timed, self.hook, "decode", decode_frame, *args)

    def _enqueue(
        self, pending: asyncio.Queue, batcher, target: int, window: np.ndarray, arrival: float
    ) -> None:
        if pending.full():
            raise ServiceError(
                "overloaded",
                f"more than {self.settings.stream_queue} frames in flight: send slower or read masks faster",
            )
        future = batcher.enqueue(window[None], realtime=True, source=self)  # (k, S, S) -> (1, k, S, S)
        pending.put_nowait((target, arrival, future, window[batcher.backend.config.offsets.index(0)]))

    # -- sending -------------------------------------------------------------------------------
    async def _send_loop(self, start: StartParams, pending: asyncio.Queue) -> None:
        while True:
            item = await pending.get()
            if item is _END:
                await self._send_summary(start)
                return
            target, arrival, future, seen = item
            result = await future
            if self.hook is not None:
                self.hook("queue_wait", result.queue_s * 1e3)
                self.hook("inference", result.inference_s * 1e3)
                self.hook("batch", result.batch_size)
            logits = result.logits[0]  # (1, S, S) -> (S, S)
            mask = timed(self.hook, "resize_back", self._readout.mask, logits, start.height, start.width)
            quality = self._readout.quality(logits, seen)
            if self.settings.stream_fast_path:  # a zlib 1-bit PNG costs less than a thread hop
                payload = timed(
                    self.hook, "encode", encode_mask, mask, start.mask_encoding, png_encoder="zlib"
                )
            else:
                payload = await asyncio.to_thread(
                    timed, self.hook, "encode", encode_mask, mask, start.mask_encoding, "pil"
                )
            sending = time.perf_counter()
            await self.ws.send_bytes(self._header(target, quality, start.mask_format) + payload)
            if self.hook is not None:
                self.hook("sends", [target, sending, time.perf_counter()])
            self.sent += 1
            self.metrics.observe_frame("ws", time.perf_counter() - arrival, self.settings.budget_s)
            self.metrics.observe_flag("ws", quality.flag)
            stored = payload if start.mask_encoding == "png" and self.settings.stream_fast_path else None
            self._summary.keep(float(mask.sum()), stored or png_1bit(mask), quality)

    @staticmethod
    def _header(target: int, quality: FrameQuality, mask_format: int) -> bytes:
        """mask_format 1: uint32 index; 2: uint32 index, uint8 flag, uint8 confidence * 255."""
        if mask_format == 1:
            return struct.pack("<I", target)
        return struct.pack("<IBB", target, FLAG_CODES[quality.flag], round(quality.confidence * 255))

    async def _send_summary(self, start: StartParams) -> None:
        summary = await asyncio.to_thread(self._summary.message, self.sent, start, self.region)
        await self.ws.send_json(summary)
        await self.ws.close(WS_NORMAL)
        self.outcome = ("ok", None, WS_NORMAL)

    # -- failing -------------------------------------------------------------------------------
    async def _fail(self, err: ServiceError) -> None:
        """Tell the client what went wrong (text error message), then close with the mapped code."""
        self.metrics.errors.labels(err.code).inc()
        self.outcome = ("error", err.code, err.ws_close)
        if err.code not in ("shutting_down", "overloaded"):
            log.info("stream of %s: error %s: %s", self.principal.name, err.code, err.detail)
        else:
            log.warning("stream closed: %s", err.code)
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.send_json(err.payload()), SEND_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(err.ws_close), SEND_TIMEOUT_S)
