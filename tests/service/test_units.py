"""Unit tests of the service's own logic: RLE, windows, batcher, decoding, settings, backend choice."""

from __future__ import annotations

import asyncio
import io
import logging

import numpy as np
import pytest

from echoseg.artifacts import model_kind
from echoseg.config import ModelConfig
from echoseg.preprocess import StreamWindows, window_indices
from echoseg.runtime import choose_backend
from service.batcher import MicroBatcher
from service.codecs.clip import Limits, decode_clip, sniff_media_type
from service.codecs.frames import decode_frame, decode_mask, encode_frame, encode_mask
from service.codecs.rle import rle_decode, rle_encode
from service.core.config import Settings
from service.core.errors import ServiceError
from service.core.metrics import Metrics
from service.stream import parse_start

from .conftest import fake_backend, moving_disc_clip


def test_rle_documented_example():
    assert rle_encode(np.array([[0, 1, 1], [1, 0, 0]])).tolist() == [1, 3, 2]
    assert rle_encode(np.array([[1, 1], [0, 1]])).tolist() == [0, 2, 1, 1]


def test_every_output_names_an_encoder_that_imports():
    from service.api.outputs import DICOM_OUTPUTS, OUTPUTS

    assert list(OUTPUTS) == ["json", "npz", "mp4", "dicom-seg", "dicom-sr"]
    assert DICOM_OUTPUTS == ("dicom-seg", "dicom-sr")
    for row in OUTPUTS.values():
        assert callable(row.load_encoder()), row.name


def test_a_dicom_library_refusal_names_the_output_and_never_the_value(caplog):
    from service.codecs.dicom_source import built_or_refused

    def build():
        raise ValueError("Invalid value for VR PN: 'Doe^Jane'")

    with pytest.raises(ServiceError) as err, caplog.at_level(logging.WARNING):
        built_or_refused("dicom-sr", build)
    assert err.value.code == "invalid_metadata" and "output=dicom-sr" in err.value.detail
    assert "Doe" not in err.value.detail and "Doe" not in caplog.text and "ValueError" in caplog.text


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (48, 40)])
def test_rle_roundtrip(shape):
    rng = np.random.default_rng(0)
    for mask in (rng.random(shape) > 0.5, np.zeros(shape), np.ones(shape)):
        counts = rle_encode(mask)
        assert sum(counts) == mask.size
        np.testing.assert_array_equal(rle_decode(counts, *shape), mask.astype(np.uint8))


@pytest.mark.parametrize("window,k", [("centered", 3), ("centered", 5), ("causal", 3), ("centered", 1)])
@pytest.mark.parametrize("length", [1, 2, 4, 9])
def test_stream_windows_match_clip_windows(window, k, length):
    """Streaming windows (look-ahead, edge replication at start and end) equal the offline ones."""
    config = ModelConfig(num_frames=k, window=window, depth=3, calibrated_levels=(), input_size=32)
    frames = np.arange(length, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    sw = StreamWindows(config)
    got = []
    for f in frames:
        got += sw.push(f)
    assert len(got) == max(0, length - config.lookahead)
    got += sw.finish()
    assert [t for t, _ in got] == list(range(length))
    for t, w in got:
        np.testing.assert_array_equal(w[:, 0, 0], window_indices(t, length, config))


def test_batcher_batches_concurrent_requests_and_returns_each_its_own():
    backend = fake_backend(delay_s=0.02)
    batcher = MicroBatcher(backend, Metrics(), max_batch=8, max_wait_s=0.005)
    batcher.start()
    rng = np.random.default_rng(1)
    requests = [rng.random((n, 3, 32, 32), dtype=np.float32) for n in (1, 1, 1, 1, 3, 1, 2, 1, 1, 1)]

    async def main():
        results = await asyncio.gather(
            *(batcher.submit(r, realtime=i % 2 == 0) for i, r in enumerate(requests))
        )
        return results

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    for req, res in zip(requests, results, strict=True):
        np.testing.assert_allclose(res.logits, 4.0 * req[:, 1], rtol=1e-6)
    assert sum(backend.batches) == sum(r.shape[0] for r in requests)
    assert max(backend.batches) > 1 and max(backend.batches) <= 8


def test_batcher_rejects_oversized_and_reports_backend_failure():
    backend = fake_backend()
    backend.infer = lambda batch: (_ for _ in ()).throw(RuntimeError("boom"))
    batcher = MicroBatcher(backend, Metrics(), max_batch=4)
    batcher.start()

    async def main():
        with pytest.raises(ValueError, match="1 <= n <= 4"):
            await batcher.submit(np.zeros((5, 3, 32, 32), np.float32))
        with pytest.raises(ServiceError) as e:
            await batcher.submit(np.zeros((1, 3, 32, 32), np.float32))
        assert e.value.code == "internal"

    try:
        asyncio.run(main())
    finally:
        batcher.close()


LIMITS = Limits(max_frames=50, max_width=64, max_height=64)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def avi_bytes(frames: np.ndarray, fps: int = 25) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="avi") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuvj420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="gray")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def test_decode_npy_gray_and_rgb():
    clip = moving_disc_clip(5)
    np.testing.assert_array_equal(decode_clip(npy_bytes(clip), "application/x-npy", LIMITS).frames, clip)
    rgb = np.repeat(clip[..., None], 3, axis=-1)
    np.testing.assert_array_equal(decode_clip(npy_bytes(rgb), "application/x-npy", LIMITS).frames, clip)


def test_decode_avi_counts_frames_and_sniffs():
    clip = moving_disc_clip(6, 48, 64)
    data = avi_bytes(clip)
    assert sniff_media_type(data) == "video/x-msvideo"
    decoded = decode_clip(data, "video/x-msvideo", LIMITS)
    assert decoded.frames.shape == clip.shape and decoded.fps == 25.0
    assert np.abs(decoded.frames.astype(int) - clip).mean() < 8  # MJPEG is lossy


@pytest.mark.parametrize(
    "data,media,code",
    [
        (b"", "application/x-npy", "empty_body"),
        (b"hello", "text/plain", "unsupported_media_type"),
        (b"\x93NUMPY garbage", "application/x-npy", "corrupt_input"),
        (npy_bytes(np.zeros((3, 4), np.uint8)), "application/x-npy", "corrupt_input"),
        (npy_bytes(np.zeros((2, 4, 4), np.float32)), "application/x-npy", "corrupt_input"),
        (npy_bytes(np.zeros((51, 4, 4), np.uint8)), "application/x-npy", "too_many_frames"),
        (npy_bytes(np.zeros((2, 65, 4), np.uint8)), "application/x-npy", "dimensions_too_large"),
        (b"RIFF\x00\x00\x00\x00AVI garbage", "video/x-msvideo", "corrupt_input"),
        (avi_bytes(moving_disc_clip(51, 16, 16)), "video/x-msvideo", "too_many_frames"),
    ],
)
def test_decode_errors(data, media, code):
    with pytest.raises(ServiceError) as e:
        decode_clip(data, media, LIMITS)
    assert e.value.code == code


def h264_ts_bytes(size: int, frames: int = 4) -> bytes:
    """An H.264 MPEG-TS segment; two segments of different sizes concatenated change size mid-stream."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            gray = np.full((size, size), 20 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(gray, format="gray").reformat(format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def test_decode_video_whose_frame_size_changes_is_corrupt_input():
    with pytest.raises(ServiceError) as e:
        decode_clip(h264_ts_bytes(32) + h264_ts_bytes(24), "video/mp4", LIMITS)
    assert e.value.code == "corrupt_input"
    assert "frame size changes" in e.value.detail


def test_decode_dicom_multiframe_with_region_spacing():
    pydicom = pytest.importorskip("pydicom")
    from tests.service.dicom import dicom_bytes

    clip = moving_disc_clip(4, 32, 24)
    decoded = decode_clip(dicom_bytes(clip, delta_cm=(0.03, 0.05)), "application/dicom", LIMITS)
    np.testing.assert_array_equal(decoded.frames, clip)
    assert decoded.spacing == pytest.approx((0.3, 0.5))  # (row, col) mm = (DeltaY, DeltaX) * 10
    assert decoded.fps == pytest.approx(50.0)
    assert pydicom is not None


@pytest.mark.parametrize("encoding", ["gray8", "png", "jpeg"])
def test_frame_codecs(encoding):
    frame = moving_disc_clip(1, 30, 20)[0]
    back = decode_frame(encode_frame(frame, encoding), encoding, 20, 30)
    assert back.shape == (30, 20)
    if encoding != "jpeg":
        np.testing.assert_array_equal(back, frame)


@pytest.mark.parametrize("encoding", ["gray8", "png"])
def test_mask_codecs(encoding):
    mask = (moving_disc_clip(1, 30, 20)[0] > 100).astype(np.uint8)
    np.testing.assert_array_equal(decode_mask(encode_mask(mask, encoding), encoding, 20, 30), mask)


@pytest.mark.parametrize(
    "msg,code",
    [
        ({"width": 0, "height": 4}, "invalid_start"),
        ({"width": "4", "height": 4}, "invalid_start"),
        ({"width": 4, "height": 4, "encoding": "rgb"}, "invalid_start"),
        ({"width": 4, "height": 4, "mask_encoding": "rle"}, "invalid_start"),
        ({"width": 4, "height": 4, "fps": -1}, "invalid_start"),
        ({"width": 65, "height": 4}, "dimensions_too_large"),
        ({"width": 4.5, "height": 4}, "invalid_start"),
        ({"width": True, "height": 4}, "invalid_start"),
        ({"width": float("inf"), "height": 4}, "invalid_start"),
        ({"width": float("nan"), "height": 4}, "invalid_start"),
        ({"width": 65.0, "height": 4}, "dimensions_too_large"),
        ({"width": 4, "height": 4, "mask_format": 1.5}, "invalid_start"),
        ({"width": 16, "height": 16, "region": {"x0": 0, "y0": 0, "x1": 8.5, "y1": 8}}, "invalid_start"),
    ],
)
def test_parse_start_errors(msg, code):
    with pytest.raises(ServiceError) as e:
        parse_start({"type": "start", **msg}, 64, 64)
    assert e.value.code == code


def test_parse_start_takes_integral_numbers_as_integers():
    """``160.0`` is a JSON Schema integer (docs/asyncapi.yaml): the same start as ``160``, as ints."""
    region = {"x0": 0, "y0": 2, "x1": 16, "y1": 12, "fan": [[0, 2], [15, 2], [8, 11]]}
    ints = {"type": "start", "width": 16, "height": 12, "mask_format": 2, "region": region}
    as_ints = parse_start(ints, 64, 64)
    float_region = {k: float(v) for k, v in region.items() if k != "fan"}
    float_region["fan"] = [[float(c) for c in p] for p in region["fan"]]
    floats = {**ints, "width": 16.0, "height": 12.0, "mask_format": 2.0, "region": float_region}
    as_floats = parse_start(floats, 64, 64)
    assert as_floats == as_ints
    assert all(type(v) is int for v in (as_floats.width, as_floats.height, as_floats.mask_format))
    assert all(type(c) is int for p in as_floats.region.fan for c in p)
    assert type(as_floats.region.x1) is int


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("ECHOSEG_MAX_BATCH", "4")
    monkeypatch.setenv("ECHOSEG_API_KEYS", "a, b,,")
    monkeypatch.setenv("ECHOSEG_BACKEND", "torch")
    s = Settings()
    assert s.max_batch == 4 and s.keys == ["a", "b"] and s.backend == "torch"
    assert s.max_batch_wait_ms == 1.5 and s.budget_ms == 32.0 and s.intra_op_threads >= 1
    monkeypatch.setenv("ECHOSEG_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="onnxruntime"):
        Settings()


def test_choose_backend(tmp_path):
    assert model_kind(tmp_path / "m.onnx") == "onnx"
    assert model_kind(tmp_path) == "checkpoint"
    assert choose_backend("onnx", "auto", "cpu")[0] == "onnxruntime"
    assert choose_backend("engine", "auto", "cuda")[0] == "tensorrt"
    assert choose_backend("checkpoint", "auto", "cpu")[0] == "onnxruntime"
    with pytest.raises(ValueError, match="checkpoint"):
        choose_backend("onnx", "torch", "cpu")
    with pytest.raises(ValueError, match="engine"):
        choose_backend("checkpoint", "tensorrt", "cuda")
    with pytest.raises(ValueError, match="cannot tell"):
        model_kind(tmp_path / "weights.bin")
