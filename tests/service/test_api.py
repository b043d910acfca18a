"""The wire, with a fake backend: a real uvicorn server driven by real httpx and websockets clients."""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from echoseg.preprocess import clip_windows, logits_to_masks, preprocess
from service.client import stream_frames
from service.codecs.rle import rle_decode

from .conftest import fake_backend, moving_disc_clip
from .test_units import avi_bytes, npy_bytes


def offline_masks(backend, frames: np.ndarray) -> np.ndarray:
    """What the service must return: the same preprocessing and windows, run in one go."""
    windows = clip_windows(preprocess(frames, backend.config), backend.config)  # (T, k, S, S)
    return logits_to_masks(backend.infer(windows)[:, 0], *frames.shape[1:], backend.config)


def test_health_models_and_metrics_names(fake_server):
    assert httpx.get(f"{fake_server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{fake_server.url}/readyz").status_code == 200
    models = httpx.get(f"{fake_server.url}/v1/models").json()["models"]
    assert models[0]["id"] == "fake-0" and models[0]["lookahead_frames"] == 1
    text = httpx.get(f"{fake_server.url}/metrics").text
    for name in (
        "echoseg_frame_latency_seconds", "echoseg_inference_seconds", "echoseg_queue_wait_seconds",
        "echoseg_batch_size", "echoseg_frames_total", "echoseg_budget_misses_total", "echoseg_errors_total",
        "echoseg_http_requests_total", "echoseg_active_streams", "echoseg_ready", "echoseg_model_info",
    ):  # fmt: skip
        assert name in text, name
    m = fake_server.metrics()
    assert m[("echoseg_ready", ())] == 1
    assert m[("echoseg_model_info", (("backend", "fake"), ("model_id", "fake-0"), ("preset", "fake")))] == 1
    assert m[("echoseg_http_requests_total", (("route", "/v1/models"), ("status", "200")))] == 1


def test_metrics_have_no_created_series(fake_server):
    """Counters and histograms export their samples, and no ``*_created`` timestamp beside them."""
    assert httpx.get(f"{fake_server.url}/v1/models").status_code == 200
    text = httpx.get(f"{fake_server.url}/metrics").text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    assert "echoseg_http_requests_total" in names  # a counter with a child: the check means something
    assert "echoseg_batch_size_bucket" in names  # and a histogram
    assert not [n for n in names if n.endswith("_created")], sorted(names)
    assert "_created" not in text


@pytest.mark.parametrize("how", ["raw-npy", "multipart-npy", "raw-avi", "multipart-octet-avi"])
def test_rest_masks_equal_offline(fake_server, clip, how):
    backend = fake_server.service.backend
    kind, fmt = how.rsplit("-", 1)
    data = npy_bytes(clip) if fmt == "npy" else avi_bytes(clip)
    media = "application/x-npy" if fmt == "npy" else "video/x-msvideo"
    url = f"{fake_server.url}/v1/segment"
    if kind == "raw":
        resp = httpx.post(url, content=data, headers={"Content-Type": media})
    else:
        part_type = "application/octet-stream" if "octet" in kind else media
        resp = httpx.post(url, files={"file": ("clip.bin", data, part_type)})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    t, h, w = clip.shape
    assert (body["frames"], body["height"], body["width"]) == (t, h, w)
    masks = np.stack([rle_decode(c, h, w) for c in body["masks"]["counts"]])
    decoded = (
        clip
        if fmt == "npy"
        else __import__("service.codecs.clip", fromlist=["x"])
        .decode_clip(data, media, __import__("service.codecs.clip", fromlist=["x"]).Limits(100, 100, 100))
        .frames
    )
    np.testing.assert_array_equal(masks, offline_masks(backend, decoded))
    np.testing.assert_allclose(body["area"], masks.reshape(t, -1).sum(1))
    assert body["ed_frames"] and body["es_frames"] and body["ef"] is not None  # the disc beats
    assert set(body["timings_ms"]) == {"decode", "preprocess", "queue", "inference", "postprocess", "total"}
    assert body["model"]["id"] == "fake-0"


def test_rest_npz_and_mp4_outputs(fake_server, clip):
    url = f"{fake_server.url}/v1/segment"
    headers = {"Content-Type": "application/x-npy"}
    npz = httpx.post(url, params={"output": "npz"}, content=npy_bytes(clip), headers=headers)
    assert npz.status_code == 200 and npz.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(npz.content), allow_pickle=False) as z:
        np.testing.assert_array_equal(z["masks"], offline_masks(fake_server.service.backend, clip))
        assert json.loads(str(z["summary"]))["frames"] == clip.shape[0]
    mp4 = httpx.post(url, params={"output": "mp4"}, content=npy_bytes(clip), headers=headers)
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    import av

    with av.open(io.BytesIO(mp4.content)) as c:
        assert sum(1 for _ in c.decode(video=0)) == clip.shape[0]


def test_rest_dicom_reports_mm(fake_server, clip):
    pytest.importorskip("pydicom")
    from tests.service.dicom import dicom_bytes

    data = dicom_bytes(clip, delta_cm=(0.05, 0.05))
    resp = httpx.post(
        f"{fake_server.url}/v1/segment", content=data, headers={"Content-Type": "application/dicom"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["spacing"] == {"row": 0.5, "col": 0.5, "unit": "mm"} and body["area_unit"] == "mm2"
    masks = offline_masks(fake_server.service.backend, clip)
    np.testing.assert_allclose(body["area"], masks.reshape(len(masks), -1).sum(1) * 0.25)


@pytest.mark.parametrize("window,encoding", [("centered", "gray8"), ("centered", "png"), ("causal", "gray8")])
def test_stream_masks_equal_offline(make_server, clip, window, encoding):
    server = make_server(fake_backend(window=window), max_batch=8)
    report = asyncio.run(stream_frames(clip, server.url, fps=None, encoding=encoding, mask_encoding="png"))
    assert report.error is None and report.close_code == 1000
    assert report.ready["lookahead_frames"] == (1 if window == "centered" else 0)
    assert report.indices == list(range(len(clip)))
    np.testing.assert_array_equal(np.stack(report.masks), offline_masks(server.service.backend, clip))
    assert report.summary["frames"] == len(clip) and report.summary["ed_frames"]
    m = server.metrics()
    assert m[("echoseg_frames_total", (("outcome", "ok"),))] == len(clip)
    assert m[("echoseg_frame_latency_seconds_count", (("transport", "ws"),))] == len(clip)


def test_stream_jpeg_frames_and_gray8_masks(fake_server):
    clip = moving_disc_clip(6, 40, 40)
    report = asyncio.run(
        stream_frames(clip, fake_server.url, fps=None, encoding="jpeg", mask_encoding="gray8")
    )
    assert report.indices == list(range(6)) and report.close_code == 1000
    expected = offline_masks(fake_server.service.backend, clip)
    agree = np.mean(np.stack(report.masks) == expected)
    assert agree > 0.97  # JPEG is lossy; the masks still agree almost everywhere


# -- the error table -------------------------------------------------------------------------------
REST_ERRORS = [
    # (id, kwargs for httpx.post, expected status, expected code)
    ("empty", dict(content=b"", headers={"Content-Type": "application/x-npy"}), 400, "empty_body"),
    ("unsupported", dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415,
     "unsupported_media_type"),
    ("corrupt-npy", dict(content=b"\x93NUMPYxx", headers={"Content-Type": "application/x-npy"}), 422,
     "corrupt_input"),
    ("corrupt-avi", dict(content=b"RIFF0000AVI junk" * 8, headers={"Content-Type": "video/x-msvideo"}), 422,
     "corrupt_input"),
    ("corrupt-mp4", dict(content=b"\x00\x00\x00\x18ftypmp42junk", headers={"Content-Type": "video/mp4"}), 422,
     "corrupt_input"),
    ("too-large", dict(content=b"\x00" * (2 * 2**20 + 1), headers={"Content-Type": "application/x-npy"}), 413,
     "payload_too_large"),
    ("too-many-frames", dict(content=npy_bytes(np.zeros((41, 8, 8), np.uint8)),
                             headers={"Content-Type": "application/x-npy"}), 413, "too_many_frames"),
    ("too-wide", dict(content=npy_bytes(np.zeros((2, 8, 200), np.uint8)),
                      headers={"Content-Type": "application/x-npy"}), 413, "dimensions_too_large"),
    ("no-file-field", dict(files={"clip": ("a.npy", b"x", "application/x-npy")}), 422, "invalid_request"),
    ("bad-output", dict(params={"output": "gif"}, content=b"x",
                        headers={"Content-Type": "application/x-npy"}),
     422, "invalid_request"),
]  # fmt: skip


def _streamed_too_large():
    def body():
        for _ in range(40):
            yield b"\x00" * 65536  # 2.5 MiB without a Content-Length: refused while reading

    return dict(content=body(), headers={"Content-Type": "application/x-npy"})


@pytest.fixture
def limited_server(make_server):
    return make_server(fake_backend(), max_batch=8, max_upload_mb=2, max_frames=40, max_frame_width=128)


@pytest.mark.parametrize("case", [*REST_ERRORS, ("too-large-chunked", None, 413, "payload_too_large")],
                         ids=lambda c: c[0])  # fmt: skip
def test_rest_error_table(limited_server, clip, case):
    _, kwargs, status, code = case
    kwargs = kwargs or _streamed_too_large()
    resp = httpx.post(f"{limited_server.url}/v1/segment", timeout=30, **kwargs)
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code and resp.json()["type"] == "error"
    m = limited_server.metrics()
    assert m[("echoseg_errors_total", (("code", code),))] >= 1
    # the server keeps serving others
    ok = httpx.post(f"{limited_server.url}/v1/segment", content=npy_bytes(clip),
                    headers={"Content-Type": "application/x-npy"})  # fmt: skip
    assert ok.status_code == 200


START = json.dumps({"type": "start", "width": 16, "height": 8, "encoding": "gray8"})
WS_ERRORS = [
    # (id, messages sent in order, expected error code, expected close code)
    ("invalid-json", ["{not json"], "invalid_json", 1003),
    ("json-not-object", ["[1, 2]"], "invalid_json", 1003),
    ("unknown-type", [json.dumps({"type": "hello"})], "unknown_message_type", 1003),
    ("binary-before-start", [b"\x00" * 128], "binary_before_start", 1003),
    ("end-before-start", [json.dumps({"type": "end"})], "invalid_start", 1003),
    ("bad-start", [json.dumps({"type": "start", "width": -1, "height": 8})], "invalid_start", 1003),
    (
        "start-too-large",
        [json.dumps({"type": "start", "width": 4096, "height": 8})],
        "dimensions_too_large",
        1009,
    ),
    ("wrong-frame-size", [START, b"\x00" * 127], "wrong_frame_size", 1003),
    ("text-where-binary", [START, "frame bytes as text"], "expected_binary", 1003),
    ("unknown-type-after-start", [START, json.dumps({"type": "pause"})], "unknown_message_type", 1003),
    ("second-start", [START, START], "invalid_start", 1003),
    ("corrupt-png", [START.replace("gray8", "png"), b"\x89PNG\r\n\x1a\nbroken"], "corrupt_frame", 1003),
    ("png-wrong-dimensions", [START.replace("gray8", "png"), None], "wrong_frame_dimensions", 1003),
    (
        "frame-too-large",
        [START.replace("gray8", "jpeg"), b"\xff" * (16 * 8 * 3 + 65537)],
        "frame_too_large",
        1009,
    ),
]


async def _ws_exchange(url: str, messages: list) -> tuple[list, int | None]:
    from service.codecs.frames import encode_frame

    received = []
    async with connect(url.replace("http", "ws") + "/v1/stream") as ws:
        for m in messages:
            await ws.send(m if m is not None else encode_frame(np.zeros((9, 16), np.uint8), "png"))
        try:
            async for reply in ws:
                received.append(reply)
        except Exception:
            pass
        return received, ws.close_code


@pytest.mark.parametrize("case", WS_ERRORS, ids=lambda c: c[0])
def test_stream_error_table(fake_server, clip, case):
    _, messages, code, close = case
    received, close_code = asyncio.run(_ws_exchange(fake_server.url, messages))
    errors = [json.loads(r) for r in received if isinstance(r, str) and json.loads(r)["type"] == "error"]
    assert errors and errors[-1]["code"] == code, received
    assert close_code == close
    assert fake_server.metrics()[("echoseg_errors_total", (("code", code),))] >= 1
    report = asyncio.run(stream_frames(clip[:5], fake_server.url, fps=None))  # others are still served
    assert report.indices == list(range(5)) and report.close_code == 1000


def test_unknown_route_is_not_a_label(fake_server):
    assert httpx.get(f"{fake_server.url}/nope/123").status_code == 404
    assert (
        fake_server.metrics()[("echoseg_http_requests_total", (("route", "other"), ("status", "404")))] == 1
    )


# -- back-pressure ------------------------------------------------------------------------------
def test_fast_sender_gets_overloaded_and_other_streams_continue(make_server):
    server = make_server(fake_backend(delay_s=0.05), max_batch=1, stream_queue=4)
    flood = moving_disc_clip(60, 16, 16)

    async def main():
        return await asyncio.gather(
            stream_frames(
                flood, server.url, fps=None, flow_control=False
            ),  # floods: 60 frames at once, 20 served per s
            stream_frames(flood[:6], server.url, fps=10),  # a polite client beside it
        )

    flooder, polite = asyncio.run(main())
    assert flooder.error["code"] == "overloaded" and flooder.close_code == 1013
    assert polite.indices == list(range(6)) and polite.close_code == 1000
    m = server.metrics()
    assert m[("echoseg_frames_total", (("outcome", "dropped"),))] > 0


def test_slow_reader_does_not_stall_other_streams(make_server):
    """A client that never reads its masks fills only its own queue; another stream runs normally."""
    server = make_server(fake_backend(), max_batch=4, stream_queue=8)
    big = moving_disc_clip(150, 512, 512)  # masks large enough to fill socket buffers

    async def never_reads():
        url = server.url.replace("http", "ws") + "/v1/stream"
        async with connect(url, max_queue=1, compression=None) as ws:  # no deflate: masks stay large
            await ws.send(
                json.dumps({"type": "start", "width": 512, "height": 512, "mask_encoding": "gray8"})
            )
            await ws.recv()
            ws.transport.pause_reading()  # stop reading: masks pile up in the server's send path
            try:
                for f in big:
                    await asyncio.wait_for(ws.send(f.tobytes()), 5.0)  # blocks once the server stops reading
                    await asyncio.sleep(0.002)
            except Exception:
                pass
            await asyncio.sleep(0.5)
            ws.transport.abort()  # a stuck client vanishes without a close handshake

    async def main():
        slow = asyncio.create_task(never_reads())
        await asyncio.sleep(0.3)
        report = await stream_frames(moving_disc_clip(20, 32, 32), server.url, fps=50)
        await slow
        return report

    report = asyncio.run(main())
    assert report.indices == list(range(20)) and report.close_code == 1000
    assert server.metrics()[("echoseg_errors_total", (("code", "overloaded"),))] >= 1


# -- auth -----------------------------------------------------------------------------------------
def test_api_keys(make_server, clip):
    server = make_server(fake_backend(), api_keys="k1,k2")
    url = f"{server.url}/v1/segment"
    body = dict(content=npy_bytes(clip[:4]), headers={"Content-Type": "application/x-npy"})
    assert httpx.post(url, **body).status_code == 401
    wrong = {"Content-Type": "application/x-npy", "Authorization": "Bearer nope"}
    assert httpx.post(url, content=body["content"], headers=wrong).status_code == 401
    good = {"Content-Type": "application/x-npy", "Authorization": "Bearer k2"}
    assert httpx.post(url, content=body["content"], headers=good).status_code == 200
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(server.url + open_path).status_code == 200
    denied = asyncio.run(stream_frames(clip[:3], server.url, fps=None))
    assert denied.error["code"] == "unauthorized" and denied.close_code == 1008
    by_header = asyncio.run(stream_frames(clip[:3], server.url, fps=None, api_key="k1"))
    by_query = asyncio.run(stream_frames(clip[:3], server.url, fps=None, api_key="k1", token_in_query=True))
    assert by_header.indices == by_query.indices == [0, 1, 2]


def test_too_many_streams(make_server, clip):
    server = make_server(fake_backend(), max_streams=1)

    async def main():
        async with connect(server.url.replace("http", "ws") + "/v1/stream") as first:
            await first.send(START)
            await first.recv()
            return await stream_frames(clip[:3], server.url, fps=None)

    report = asyncio.run(main())
    assert report.error["code"] == "too_many_streams" and report.close_code == 1013


# -- readiness and drain --------------------------------------------------------------------------
def test_drain_finishes_streams_then_closes_with_1001(make_server, clip):
    server = make_server(fake_backend(), drain_timeout_s=1.0)

    async def main():
        async with connect(server.url.replace("http", "ws") + "/v1/stream") as ws:
            await ws.send(START)
            await ws.recv()
            await ws.send(b"\x00" * 128)
            drain = asyncio.get_running_loop().run_in_executor(None, server.call, server.service.drain())
            await asyncio.sleep(0.3)
            ready = await asyncio.to_thread(httpx.get, f"{server.url}/readyz")
            upload = await asyncio.to_thread(
                httpx.post, f"{server.url}/v1/segment", content=npy_bytes(clip),
                headers={"Content-Type": "application/x-npy"},
            )  # fmt: skip
            late = await stream_frames(clip[:2], server.url, fps=None)
            messages = []
            try:
                async for m in ws:
                    messages.append(m)
            except Exception:
                pass
            await drain
            return ready, upload, late, messages, ws.close_code

    ready, upload, late, messages, code = asyncio.run(main())
    assert ready.status_code == 503 and ready.json()["draining"] is True
    assert upload.status_code == 503 and upload.json()["code"] == "shutting_down"
    assert late.error["code"] == "shutting_down" and late.close_code == 1001
    assert json.loads(messages[-1])["code"] == "shutting_down" and code == 1001
    assert server.metrics()[("echoseg_ready", ())] == 0
