"""Streaming-path settings: zlib 1-bit PNG masks, early batch close, WebSocket deflate."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from service.batcher import MicroBatcher, _Request
from service.codecs.frames import decode_mask, encode_mask, png_1bit
from service.core.config import Settings
from service.core.metrics import Metrics

from .conftest import fake_backend


@pytest.mark.parametrize("shape", [(1, 1), (30, 20), (13, 29), (480, 640), (7, 8), (9, 17)])
def test_png_1bit_decodes_to_the_mask_like_the_pil_encoder(shape):
    rng = np.random.default_rng(sum(shape))
    mask = (rng.random(shape) > 0.5).astype(np.uint8)
    fast = png_1bit(mask)
    with Image.open(io.BytesIO(fast)) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "1", (shape[1], shape[0]))
    pil = encode_mask(mask, "png", png_encoder="pil")
    h, w = shape
    np.testing.assert_array_equal(decode_mask(fast, "png", w, h), mask)
    np.testing.assert_array_equal(decode_mask(fast, "png", w, h), decode_mask(pil, "png", w, h))
    assert encode_mask(mask, "png") == fast  # zlib is the default encoder


def test_encode_mask_names_valid_png_encoders():
    with pytest.raises(ValueError, match="'zlib' or 'pil'"):
        encode_mask(np.zeros((2, 2), np.uint8), "png", png_encoder="lodepng")


def _requests(sources):
    loop = asyncio.new_event_loop()
    try:
        windows = np.zeros((1, 3, 4, 4), np.float32)
        return [_Request(windows, loop.create_future(), loop, s) for s in sources]
    finally:
        loop.close()


def test_batch_stops_waiting_once_every_open_stream_is_in():
    a, b = object(), object()
    open_streams = [2]
    batcher = MicroBatcher(fake_backend(), Metrics(), max_batch=8, open_sources=lambda: open_streams[0])
    assert not batcher._every_stream_in(_requests([a]))  # b may still send: wait
    assert batcher._every_stream_in(_requests([a, b]))
    open_streams[0] = 1
    assert batcher._every_stream_in(_requests([a]))
    assert not batcher._every_stream_in(_requests([a, None]))  # an upload chunk: keep the old rule
    plain = MicroBatcher(fake_backend(), Metrics(), max_batch=8)
    assert not plain._every_stream_in(_requests([a]))


def test_one_stream_batch_runs_without_the_fill_wait():
    """With a long fill wait, one open stream's frames still run one by one as they come."""
    backend = fake_backend()
    batcher = MicroBatcher(backend, Metrics(), max_batch=8, max_wait_s=30.0, open_sources=lambda: 1)
    batcher.start()
    source = object()

    async def main():
        out = []
        for i in range(3):
            w = np.full((1, 3, 32, 32), float(i), np.float32)
            out.append(await asyncio.wait_for(batcher.enqueue(w, realtime=True, source=source), 20))
        return out

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert [r.batch_size for r in results] == [1, 1, 1]
    assert backend.batches == [1, 1, 1]


def test_fast_path_setting(monkeypatch):
    assert Settings().stream_fast_path is True
    monkeypatch.setenv("ECHOSEG_STREAM_FAST_PATH", "0")
    assert Settings().stream_fast_path is False


def test_websocket_deflate_is_off_unless_asked_for(monkeypatch):
    from service.server import uvicorn_config

    assert uvicorn_config(None, Settings(), "127.0.0.1", 0).ws_per_message_deflate is False
    monkeypatch.setenv("ECHOSEG_WS_DEFLATE", "1")
    assert uvicorn_config(None, Settings(), "127.0.0.1", 0).ws_per_message_deflate is True
