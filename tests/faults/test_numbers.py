"""Item 6: numbers from a file or a client are checked (finite, in range) before any arithmetic.

A bad one is a 422 (REST) or ``invalid_start`` (stream) naming the field, never a 500/1011, and
no NaN or infinity reaches a JSON body.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from benchmarks.hostile import dicom_clip, disc_frames
from service.client import exchange

DICOM = {"Content-Type": "application/dicom"}
BAD_DICOM = [
    # (id, top-level fields, region fields, the field the error must name)
    *[(f"FrameTime={v}", {"FrameTime": v}, None, "FrameTime")
      for v in ("NaN", "inf", "1e-320", "1e300", "abc")],
    *[(f"CineRate={v}", {"CineRate": v}, None, "CineRate") for v in ("-25", "0", "abc", "99999999")],
    *[(f"PixelSpacing={v}", {"PixelSpacing": v}, None, "PixelSpacing")
      for v in ("NaN\\1", "1e300\\1", "1e-320\\1")],
    *[
        (f"PhysicalDeltaX={v}", {}, {"PhysicalDeltaX": v, "PhysicalDeltaY": 0.03}, "PhysicalDeltaX")
        for v in (float("nan"), float("inf"), 1e-320, 1e300)
    ],
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_DICOM, ids=lambda c: c[0])
def test_bad_dicom_numbers_are_422_naming_the_field(fake, case):
    _, fields, region, name = case
    server = fake()
    data = dicom_clip(disc_frames(6, 32, 32), fields=fields, region=region)
    resp = httpx.post(f"{server.url}/v1/segment", content=data, headers=DICOM, timeout=60)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["code"] == "invalid_metadata" and name in body["detail"]
    m = server.metrics()
    assert m.get(("echoseg_errors_total", (("code", "internal"),)), 0) == 0


def test_good_dicom_numbers_still_pass(fake):
    data = dicom_clip(disc_frames(6, 32, 32), fields={"CineRate": "25"}, region={"PhysicalDeltaX": -0.05,
                      "PhysicalDeltaY": 0.03})  # fmt: skip
    resp = httpx.post(f"{fake().url}/v1/segment", content=data, headers=DICOM, timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["fps"] == 25.0 and body["spacing"]["col"] == pytest.approx(0.5)


@pytest.mark.parametrize("fps", ["NaN", "Infinity", "-Infinity", "1e309", "-5", "true", '"fast"'])
def test_stream_fps_must_be_finite(fake, fps):
    start = '{"type": "start", "width": 8, "height": 8, "fps": ' + fps + "}"
    received, code = asyncio.run(exchange(fake().url, [start, bytes(64), bytes(64), '{"type": "end"}']))
    texts = [json.loads(r) for r in received if isinstance(r, str)]
    assert code == 1003 and texts[-1]["code"] == "invalid_start" and "fps" in texts[-1]["detail"]
    assert not any(isinstance(r, bytes) for r in received), "no mask before the start was accepted"


def test_end_after_zero_frames_gives_an_empty_summary(fake):
    start = json.dumps({"type": "start", "width": 8, "height": 8, "fps": 25})
    received, code = asyncio.run(exchange(fake().url, [start, json.dumps({"type": "end"})]))
    summary = json.loads(received[-1])
    assert code == 1000 and summary["type"] == "summary"
    assert summary["frames"] == 0 and summary["area"] == [] and summary["ef"] is None
