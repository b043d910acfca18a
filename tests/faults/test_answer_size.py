"""Answers are bounded: a JSON answer longer than ``max_json_mb`` is refused before it is built.

A long clip of large frames compresses to a few hundred kilobytes as H.264, and its JSON answer
(RLE masks as lists of numbers) can be hundreds of times that. The answer's length is computed
from the RLE counts without writing them; past the cap the client gets 413 ``answer_too_large``
pointing to ``output=npz``, which carries the same masks as arrays.
"""

from __future__ import annotations

import io

import httpx
import numpy as np

from benchmarks.hostile import long_video, peak_rss_mb, reset_peak, rss_mb
from tests.service.test_units import npy_bytes

MP4 = {"Content-Type": "video/mp4"}


def test_a_long_clip_json_answer_is_capped_and_points_to_npz(served):
    server = served(ECHOSEG_MAX_JSON_MB="1", ECHOSEG_MAX_BATCH="8")
    clip = long_video(300, 1024)  # ~0.9 MB on the wire; its JSON answer would be ~5 MB
    assert len(clip) < 1_000_000
    warm = httpx.post(f"{server.url}/v1/segment", content=long_video(4, 256), headers=MP4, timeout=120)
    assert warm.status_code == 200
    idle = rss_mb(server.pid)
    assert reset_peak(server.pid)
    resp = httpx.post(f"{server.url}/v1/segment", content=clip, headers=MP4, timeout=300)
    grew = peak_rss_mb(server.pid) - idle
    print(f"300x1024² MP4, JSON: {resp.status_code} ({len(resp.content)} B), peak RSS +{grew:.0f} MB")
    assert resp.status_code == 413, f"{resp.status_code}: a {len(resp.content) / 1e6:.1f} MB answer"
    body = resp.json()
    assert body["code"] == "answer_too_large" and "output=npz" in body["detail"]
    assert "max_json_mb (1 MiB)" in body["detail"]
    # decoding and segmenting 300 frames of 1024x1024 in chunks; the answer itself is never built
    assert grew < 200, f"peak RSS grew by {grew:.0f} MB"
    npz = httpx.post(f"{server.url}/v1/segment?output=npz", content=clip, headers=MP4, timeout=300)
    assert npz.status_code == 200
    assert np.load(io.BytesIO(npz.content))["masks"].shape == (300, 1024, 1024)


def test_the_size_estimate_is_the_answer_size(fake):
    """Just under the estimate the answer is refused, at it served: the estimate is an upper bound,
    within the 16 KiB and 64 bytes a frame it allows for everything but the masks."""
    rng = np.random.default_rng(0)
    clip = (rng.random((6, 64, 64)) > 0.5).astype(np.uint8) * 200  # noise: many runs a frame
    data, headers = npy_bytes(clip), {"Content-Type": "application/x-npy"}
    answer = httpx.post(f"{fake().url}/v1/segment", content=data, headers=headers, timeout=60)
    assert answer.status_code == 200
    size_mb = len(answer.content) / 2**20
    roomy = fake(max_json_mb=size_mb + 0.02)  # 16 KiB + 6 x 64 B of slack, and a little more
    assert httpx.post(f"{roomy.url}/v1/segment", content=data, headers=headers, timeout=60).status_code == 200
    tight = fake(max_json_mb=size_mb * 0.9)
    refused = httpx.post(f"{tight.url}/v1/segment", content=data, headers=headers, timeout=60)
    assert refused.status_code == 413 and refused.json()["code"] == "answer_too_large"
