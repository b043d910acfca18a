"""No input inflates past a byte budget: a deflated DICOM is inflated in a stream under a cap.

A Deflated Explicit VR Little Endian file of half a megabyte can hold hundreds of megabytes of
pixels; pydicom inflates it whole before any check. The real server's peak RSS (from /proc,
reset just before the request) shows what a request cost, for the JSON answer, for
``output=dicom-seg`` (whose header read runs first) and for four uploads at once.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from benchmarks.hostile import deflate_bomb, peak_rss_mb, reset_peak, rss_mb
from tests.service.conftest import moving_disc_clip
from tests.service.dicom import dicom_bytes

pydicom = pytest.importorskip("pydicom")
DICOM = {"Content-Type": "application/dicom"}
LIMITS = {"ECHOSEG_MAX_UPLOAD_MB": "16", "ECHOSEG_MAX_DECODED_MB": "64"}


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = deflate_bomb(frames=256, size=1024)  # 256 MiB of pixels once inflated
    assert len(data) < 300_000
    return data


def _post(url: str, data: bytes, output: str = "json") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/segment", params={"output": output}, content=data, headers=DICOM, timeout=120
    )


@pytest.mark.parametrize("output", ["json", "dicom-seg"])
def test_a_deflate_bomb_is_refused_before_it_inflates(served, bomb, output):
    server = served(**LIMITS)
    idle = rss_mb(server.pid)
    assert reset_peak(server.pid)
    resp = _post(server.url, bomb, output)
    grew = peak_rss_mb(server.pid) - idle
    print(f"deflated DICOM, output={output}: {resp.status_code}, peak RSS +{grew:.0f} MB")
    # the cap is 16 MiB of inflated data (max_upload_mb); the file alone would inflate to 256 MiB
    assert grew < 60, f"peak RSS grew by {grew:.0f} MB for a {len(bomb) / 1e6:.1f} MB deflated upload"
    assert resp.status_code == 413, resp.text
    body = resp.json()
    assert body["code"] == "payload_too_large" and "inflates to more than max_upload_mb" in body["detail"]


def test_four_deflate_bombs_at_once_stay_bounded(served, bomb):
    server = served(**LIMITS)
    idle = rss_mb(server.pid)
    assert reset_peak(server.pid)
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda o: _post(server.url, bomb, o), ["json", "dicom-seg", "json", "dicom-sr"])
        )
    grew = peak_rss_mb(server.pid) - idle
    print(f"four deflated DICOMs: {[a.status_code for a in answers]}, peak RSS +{grew:.0f} MB")
    assert grew < 150, f"peak RSS grew by {grew:.0f} MB for four deflated uploads at once"
    # refused while inflating (413), or before it when four uploads are already running (503)
    assert {a.status_code for a in answers} <= {413, 503}, [a.text for a in answers]


def _deflated(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("output", ["json", "dicom-seg"])
def test_a_small_deflated_clip_is_read_as_before(fake, output):
    clip = moving_disc_clip(frames=10, height=40, width=48)
    plain = dicom_bytes(clip, delta_cm=(0.03, 0.03))
    server = fake()
    got = _post(server.url, _deflated(plain), output)
    want = _post(server.url, plain, output)
    assert got.status_code == want.status_code == 200, got.text
    if output == "json":
        assert got.json()["masks"] == want.json()["masks"] and got.json()["frames"] == 10
    else:
        seg = pydicom.dcmread(io.BytesIO(got.content))
        assert seg.Modality == "SEG" and int(seg.NumberOfFrames) > 0
