"""No secret and no patient value reaches a log line, at DEBUG: API keys over REST and WebSocket
(header or query), and the values pydicom and highdicom quote when a DICOM holds non-standard
patient or study values (a dashed birth date, a caret-less name, a UID with letters)."""

from __future__ import annotations

import asyncio
import secrets

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.client import stream_frames
from tests.sensitive import NONSTANDARD
from tests.service.conftest import moving_disc_clip


async def _refused_ws(url: str) -> int | None:
    async with connect(url) as ws:
        try:
            async with asyncio.timeout(20):
                async for _ in ws:
                    pass
        except (ConnectionClosed, TimeoutError):
            pass
        return ws.close_code


def test_api_key_is_never_logged(served):
    key = "k" + secrets.token_hex(16)
    server = served(ECHOSEG_API_KEYS=key, ECHOSEG_LOG_LEVEL="DEBUG")
    url, ws = server.url, server.url.replace("http", "ws") + "/v1/stream"
    bearer = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{url}/v1/models?token={key}", headers=bearer).status_code == 200
    assert httpx.post(f"{url}/v1/segment?token={key}", content=b"", headers=bearer).status_code == 400
    assert httpx.post(f"{url}/v1/segment", headers={"Authorization": f"Bearer {key}x"}).status_code == 401
    clip = moving_disc_clip(4)
    for in_query in (True, False):
        report = asyncio.run(stream_frames(clip, url, fps=None, api_key=key, token_in_query=in_query))
        assert report.close_code == 1000
    assert asyncio.run(_refused_ws(f"{ws}?token={key}x")) == 1008
    assert server.terminate() < 60
    log = server.log()
    assert "GET /v1/models?token=" in log and "/v1/stream?token=" in log, "the access log was written"
    leaks = [line for line in log.splitlines() if key in line]
    assert not leaks, f"{len(leaks)} log lines hold the key, e.g. {leaks[0]!r}"
    assert "authorization: bearer" not in log.lower()


def _nonstandard_dicom(values: dict[str, str]) -> bytes:
    """A 36-frame DICOM clip with the given patient and study values written verbatim."""
    import io

    from pydicom import config, dcmread

    from tests.service.dicom import dicom_bytes

    ds = dcmread(io.BytesIO(dicom_bytes(moving_disc_clip(36, 40, 48), delta_cm=(0.03, 0.03))))
    old = config.settings.writing_validation_mode, config.settings.reading_validation_mode
    config.settings.writing_validation_mode = config.IGNORE  # as a scanner wrote them
    config.settings.reading_validation_mode = config.IGNORE  # (and this process logs none of them)
    try:
        for name, value in values.items():
            setattr(ds, name, value)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
    finally:
        config.settings.writing_validation_mode, config.settings.reading_validation_mode = old
    data = buf.getvalue()
    for value in values.values():
        assert value.encode() in data, "the values are in the file as written"
    return data


def _post(url: str, data: bytes, output: str) -> httpx.Response:
    headers = {"Content-Type": "application/dicom"}
    return httpx.post(
        f"{url}/v1/segment", params={"output": output}, content=data, headers=headers, timeout=60
    )


def test_no_patient_value_reaches_the_log(served):
    server = served(ECHOSEG_LOG_LEVEL="DEBUG")
    odd = _nonstandard_dicom(NONSTANDARD)
    assert _post(server.url, odd, "json").status_code == 200
    for output in ("dicom-sr", "dicom-seg"):  # refused, naming the fields without their values
        resp = _post(server.url, odd, output)
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["code"] == "invalid_metadata"
        for name in ("PatientBirthDate", "StudyDate", "StudyTime", "StudyInstanceUID"):
            assert name in body["detail"]
        assert not [v for v in NONSTANDARD.values() if v in resp.text]
    # a caret-less name alone is valid DICOM: the SR is made, and highdicom warns about the name
    caretless = _nonstandard_dicom({"PatientName": NONSTANDARD["PatientName"]})
    assert _post(server.url, caretless, "dicom-sr").status_code == 200
    assert server.terminate() < 60
    log = server.log()
    assert "pydicom warning withheld" in log and "highdicom warning withheld" in log, "they warned"
    leaks = [v for v in NONSTANDARD.values() if v in log]
    assert not leaks, f"the log holds {leaks}"


def test_dicom_library_records_lose_their_text_and_others_keep_it():
    import logging

    from service.core.logging import WithholdDicomValues

    def filtered(name: str, msg: str, *args) -> str:
        record = logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)
        assert WithholdDicomValues().filter(record)
        return record.getMessage()

    date = NONSTANDARD["PatientBirthDate"]
    assert filtered("pydicom", "Invalid value for VR DA: '%s'.", date) == (
        "a pydicom message withheld (it may quote patient values) [VR DA]"
    )
    text = filtered("highdicom.base", "copying %s", NONSTANDARD["StudyInstanceUID"])
    assert text == "a highdicom message withheld (it may quote patient values)"
    warned = f'/site-packages/highdicom/base.py:199: UserWarning: The string "{NONSTANDARD["PatientName"]}"'
    assert (
        filtered("py.warnings", "%s", warned) == "a highdicom warning withheld (it may quote patient values)"
    )
    other = "/work/service/segment.py:10: UserWarning: something 1958"
    assert filtered("py.warnings", "%s", other) == other
    assert filtered("service.segment", "segmented %d frames", 12) == "segmented 12 frames"
