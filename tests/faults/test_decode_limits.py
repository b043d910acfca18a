"""Items 1 and 2 of the red-team report: frame checks while decoding, and bounded memory per request.

The memory tests read the server process's peak RSS from /proc (reset just before the request),
so they measure what the request really cost, not what the code says it allocates.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from benchmarks.hostile import (
    disc_frames,
    growing_video,
    long_video,
    peak_rss_mb,
    reset_peak,
    rss_mb,
    truncated_avi,
)
from service.client import stream_frames

MP4 = {"Content-Type": "video/mp4"}
REGION_WARNINGS = ("the detected ultrasound image", "the whole-frame region was used", "the detected region")


def test_growing_frames_are_refused_at_the_first_large_frame(fake):
    server = fake()  # default limits: 1024x1024
    resp = httpx.post(f"{server.url}/v1/segment", content=growing_video(64, 2048), headers=MP4, timeout=60)
    assert resp.status_code == 413, resp.text
    assert resp.json()["code"] == "dimensions_too_large"
    assert "2048x2048" in resp.json()["detail"]


def test_decoded_bytes_budget_stops_the_decoder(fake):
    server = fake(max_decoded_mb=1)  # 40 frames of 256x256 decode to 2.5 MiB
    resp = httpx.post(f"{server.url}/v1/segment", content=long_video(40, 256), headers=MP4, timeout=60)
    assert resp.status_code == 413, resp.text
    body = resp.json()
    assert body["code"] == "payload_too_large" and "max_decoded_mb" in body["detail"]
    ok = httpx.post(f"{server.url}/v1/segment", content=long_video(8, 256), headers=MP4, timeout=60)
    assert ok.status_code == 200 and ok.json()["frames"] == 8


@pytest.mark.parametrize("keep", [0.3, 0.5])
def test_truncated_avi_is_refused_or_says_how_many_frames_were_decoded(fake, keep):
    data, declared = truncated_avi(30, keep=keep)
    resp = httpx.post(
        f"{fake().url}/v1/segment", content=data, headers={"Content-Type": "video/x-msvideo"}, timeout=60
    )
    body = resp.json()
    if resp.status_code == 422:  # cut inside a frame: refused, saying where
        assert body["code"] == "corrupt_input" and f"of {declared} frames" in body["detail"]
        return
    assert resp.status_code == 200, resp.text
    assert 0 < body["frames"] < declared
    # the disc on flat gray may also get region warnings (a moving rim looks like a small fan): the
    # truncation is said once, first among the decoder's words, whatever the region work adds
    truncation = [w for w in body["warnings"] if not w.startswith(REGION_WARNINGS)]
    assert truncation == [f"truncated: decoded {body['frames']} of the {declared} frames the file declares"]


@pytest.mark.slow
def test_peak_memory_of_a_long_upload_is_bounded(served):
    server = served(ECHOSEG_MAX_BATCH="8")
    data = long_video(300, 512)  # ~100 KB on the wire, 75 MiB of decoded pixels
    assert len(data) < 1_000_000
    httpx.post(f"{server.url}/v1/segment", content=long_video(4, 512), headers=MP4, timeout=120)  # warm
    idle = rss_mb(server.pid)
    assert reset_peak(server.pid)
    resp = httpx.post(f"{server.url}/v1/segment", content=data, headers=MP4, timeout=300)
    assert resp.status_code == 200 and resp.json()["frames"] == 300
    grew = peak_rss_mb(server.pid) - idle
    # the clip as a whole: 75 MiB of frames, 75 MiB of masks, 300 MiB of float probabilities;
    # chunked, a request holds a chunk of each plus its RLE counts
    assert grew < 120, f"peak RSS grew by {grew:.0f} MB for one upload"


@pytest.mark.slow
def test_peak_memory_of_a_stream_summary_is_flat(served):
    server = served(ECHOSEG_MAX_BATCH="8")
    frames = disc_frames(400, 512, 512)
    warm = asyncio.run(stream_frames(frames[:8], server.url, fps=None))
    assert warm.close_code == 1000
    idle = rss_mb(server.pid)
    assert reset_peak(server.pid)
    report = asyncio.run(stream_frames(frames, server.url, fps=None))
    assert report.close_code == 1000 and report.summary["frames"] == 400
    assert len(report.summary["area"]) == 400
    grew = peak_rss_mb(server.pid) - idle
    # full masks for the summary would be 400 x 512 x 512 = 100 MiB, twice over (uint8 and bool)
    assert grew < 60, f"peak RSS grew by {grew:.0f} MB for one stream"
    del frames, report
    assert np.isfinite(grew)
