"""Reference clients of the service: upload a clip over REST, or stream it over WebSocket.

They double as executable documentation of the protocol in docs/service.md; ``echoseg
segment`` and ``echoseg stream`` are thin wrappers around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.codecs.clip import Limits, decode_clip
from service.codecs.frames import decode_mask, encode_frame

SUFFIX_MEDIA = {
    ".avi": "video/x-msvideo",
    ".mp4": "video/mp4",
    ".dcm": "application/dicom",
    ".dicom": "application/dicom",
    ".npy": "application/x-npy",
}


def media_type_for(path: Path) -> str:
    try:
        return SUFFIX_MEDIA[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"cannot tell the clip type of {path.name}; use one of {sorted(SUFFIX_MEDIA)}"
        ) from None


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def percentiles(values_s: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds."""
    if not values_s:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    ms = np.asarray(values_s) * 1000.0
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


# -- REST --------------------------------------------------------------------------------------
def segment_bytes(
    data: bytes,
    media_type: str,
    url: str,
    output: str = "json",
    api_key: str | None = None,
    tls: ssl.SSLContext | None = None,
):
    """POST a clip as a raw body; returns the ``httpx.Response``. ``tls``: the context that verifies an
    https:// server (and presents a client certificate), e.g. ``service.core.tls.client_context``."""
    import httpx

    headers = {"Content-Type": media_type, **auth_headers(api_key)}
    return httpx.post(
        f"{url.rstrip('/')}/v1/segment",
        params={"output": output},
        content=data,
        headers=headers,
        timeout=300.0,
        verify=tls if tls is not None else True,
    )


# -- WebSocket ---------------------------------------------------------------------------------
@dataclass
class StreamReport:
    ready: dict = field(default_factory=dict)
    indices: list[int] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # per mask, with mask_format 2
    confidences: list[float] = field(default_factory=list)  # per mask, with mask_format 2
    latencies_s: list[float] = field(default_factory=list)
    summary: dict | None = None
    error: dict | None = None
    close_code: int | None = None


def ws_url(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return f"{base}/v1/stream"


async def stream_frames(
    frames: np.ndarray,
    url: str,
    fps: float | None = 25.0,
    encoding: str = "gray8",
    mask_encoding: str = "png",
    api_key: str | None = None,
    token_in_query: bool = False,
    flow_control: bool | None = None,
    region: dict | None = None,
    mask_format: int = 1,
    tls: ssl.SSLContext | None = None,
) -> StreamReport:
    """Send ``(T, H, W)`` uint8 frames (``(T, H, W, 3)`` RGB with ``png``/``jpeg``) at ``fps`` (None:
    as fast as possible), collect the masks.

    ``region`` (``{"x0", "y0", "x1", "y1"[, "fan"]}``, e.g. a REST answer's ``region``) tells the
    server where the ultrasound image is; ``mask_format=2`` asks for each mask's flag and
    confidence (``report.flags``, ``report.confidences``).

    With ``flow_control`` (default: when ``fps`` is None) the client never has more than the
    server's ``max_in_flight`` frames unanswered, which is how a recorded clip is sent at full
    speed without being told ``overloaded``.

    A mask's client-side latency runs from sending the last frame it needs (frame t + lookahead,
    or the ``end`` message for the last frames) to receiving it. ``wss://`` (or ``https://``) URLs
    use ``tls`` to verify the server (default: the system CAs).
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    height, width = frames.shape[1:3]
    report = StreamReport()
    target = ws_url(url) + (f"?token={api_key}" if api_key and token_in_query else "")
    headers = None if token_in_query else auth_headers(api_key)
    sent_at: list[float] = []
    payloads = [encode_frame(f, encoding) for f in frames]
    ssl_arg = (tls or True) if target.startswith("wss://") else None
    async with connect(target, additional_headers=headers, max_size=2**26, ssl=ssl_arg) as ws:
        start = {"type": "start", "width": width, "height": height, "encoding": encoding}
        if region is not None:
            start["region"] = region
        if mask_format != 1:
            start["mask_format"] = mask_format
        with contextlib.suppress(ConnectionClosed):  # refused (auth, capacity) before start was read
            await ws.send(json.dumps({**start, "mask_encoding": mask_encoding, "fps": fps or 50.0}))
        try:
            first = json.loads(await ws.recv())
        except ConnectionClosed:
            report.close_code = ws.close_code
            return report
        if first.get("type") != "ready":
            report.error = first
            await _drain(ws, report)
            return report
        report.ready = first
        lookahead = int(first["lookahead_frames"])
        credits = asyncio.Semaphore(int(first["max_in_flight"]))
        use_credits = fps is None if flow_control is None else flow_control

        async def sender() -> None:
            t0 = time.perf_counter()
            for i, payload in enumerate(payloads):
                if fps:
                    await asyncio.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
                if use_credits:
                    await credits.acquire()
                sent_at.append(time.perf_counter())
                await ws.send(payload)
            sent_at.append(time.perf_counter())  # the end message
            await ws.send(json.dumps({"type": "end"}))

        send_task = asyncio.create_task(sender())
        try:
            async for message in ws:
                now = time.perf_counter()
                if isinstance(message, bytes):
                    (index,) = struct.unpack("<I", message[:4])
                    header = 4
                    if mask_format == 2:  # uint8 flag, uint8 confidence * 255
                        flag, confidence = message[4], message[5]
                        report.flags.append(first["flags"][flag])
                        report.confidences.append(confidence / 255.0)
                        header = 6
                    credits.release()
                    report.indices.append(index)
                    report.masks.append(decode_mask(message[header:], mask_encoding, width, height))
                    need = index + lookahead
                    report.latencies_s.append(now - sent_at[min(need, len(sent_at) - 1)])
                    continue
                body = json.loads(message)
                if body.get("type") == "summary":
                    report.summary = body
                else:
                    report.error = body
        except ConnectionClosed:
            pass
        finally:
            send_task.cancel()
        report.close_code = ws.close_code
    return report


async def _drain(ws, report: StreamReport) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    report.close_code = ws.close_code


async def exchange(
    url: str, messages: list, timeout_s: float = 30.0, tls: ssl.SSLContext | None = None
) -> tuple[list, int | None]:
    """Send ``messages`` (text or binary) on a new stream, then collect every reply until the server
    closes (or ``timeout_s`` passes): ``-> (replies, close code)``. For protocol checks: the server
    may refuse and close before every message is sent, which is not an error here."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    received: list = []
    target = ws_url(url) if "/v1/stream" not in url else url
    async with connect(target, ssl=(tls or True) if target.startswith("wss://") else None) as ws:
        with contextlib.suppress(ConnectionClosed):
            for m in messages:
                await ws.send(m)
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(timeout_s):
                async for reply in ws:
                    received.append(reply)
        return received, ws.close_code


def load_clip_file(path: Path) -> np.ndarray:
    """A local clip file -> ``(T, H, W)`` uint8 frames (the server's own decoder, no limits)."""
    big = Limits(max_frames=10**7, max_width=10**5, max_height=10**5)
    return decode_clip(path.read_bytes(), media_type_for(path), big).frames


def histogram_quantiles(
    metrics_text: str, name: str, labels: dict[str, str], qs=(0.5, 0.99)
) -> dict[str, float]:
    """Quantiles (ms) of a Prometheus histogram, interpolated within buckets as histogram_quantile does."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in labels.items()):
                buckets.append((float(s.labels["le"]), s.value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out = {}
    for q in qs:
        key = f"p{round(q * 100)}"
        if total == 0:
            out[key] = float("nan")
            continue
        rank, prev_le, prev_count = q * total, 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    out[key] = prev_le * 1000.0
                else:
                    frac = (rank - prev_count) / max(count - prev_count, 1e-12)
                    out[key] = (prev_le + (le - prev_le) * frac) * 1000.0
                break
            prev_le, prev_count = le, count
    return out


def server_latency(url: str, transport: str = "ws") -> dict[str, float]:
    """p50/p99 frame latency (ms) the server measured, from its /metrics."""
    import httpx

    text = httpx.get(f"{url.rstrip('/')}/metrics", timeout=10).text
    return histogram_quantiles(text, "echoseg_frame_latency_seconds", {"transport": transport})
