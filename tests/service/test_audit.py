"""The audit trail: exactly one JSON line per API request and per stream, with the documented
fields, and no key, client file name or DICOM patient field in it or in any other log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from service.client import stream_frames
from service.core.audit import FIELDS
from service.core.keys import add_key
from tests.sensitive import FILE_NAME, KEYS, NEEDLES, PATIENT
from tests.service.conftest import fake_backend, moving_disc_clip
from tests.service.dicom import dicom_bytes

KEY = KEYS["audit"]


def dicom_with_patient(frames) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(frames)))
    for name, value in PATIENT.items():
        setattr(ds, name, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def all_logs():
    """``start()`` -> every log record of the service and uvicorn at DEBUG, formatted, from then on,
    through a handler with the product's redaction (as ``echoseg serve`` installs on its handlers)."""
    from service.core.logging import install_redaction

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "service", "websockets")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]

    def start() -> io.StringIO:
        for lg in loggers:
            lg.addHandler(handler)
            lg.setLevel(logging.DEBUG)
        install_redaction()
        return stream

    yield start
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def test_one_line_per_request_and_stream_and_no_phi(make_server, tmp_path, all_logs):
    keys, audit = tmp_path / "keys.json", tmp_path / "audit.jsonl"
    add_key(keys, "echo-cart-7", KEY, ["segment", "stream"])
    server = make_server(fake_backend(), max_batch=8, api_key_file=str(keys), audit_log=str(audit))
    logs = all_logs()
    url, auth = server.url, {"Authorization": f"Bearer {KEY}"}
    clip = moving_disc_clip(10)
    dcm = dicom_with_patient(clip)
    files = {"file": (FILE_NAME, dcm, "application/dicom")}

    ok = httpx.post(f"{url}/v1/segment", files=files, headers=auth, timeout=60)  # 1
    assert ok.status_code == 200, ok.text
    assert httpx.post(f"{url}/v1/segment", files=files, timeout=60).status_code == 401  # 2
    empty = {**auth, "Content-Type": "application/dicom"}
    assert httpx.post(f"{url}/v1/segment?token={KEY}", content=b"", headers=empty).status_code == 400  # 3
    assert httpx.get(f"{url}/v1/models", headers=auth, timeout=10).status_code == 200  # 4
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # a probe: not audited
    assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200  # open metrics: not audited
    report = asyncio.run(stream_frames(clip, url, fps=None, api_key=KEY, token_in_query=True))  # 5
    assert report.close_code == 1000
    refused = asyncio.run(stream_frames(clip, url, fps=None, api_key=KEY[:-2]))  # 6
    assert refused.close_code == 1008

    deadline = time.monotonic() + 10  # a stream's line is written as its handler ends, after the close
    while len(audit.read_text().splitlines()) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # and no seventh line follows
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [tuple(x) for x in lines] == [FIELDS] * 6, "every line has exactly the documented fields"
    got = [(x["event"], x["route"], x["principal"], x["status"], x["outcome"], x["error"]) for x in lines]
    assert got == [
        ("request", "/v1/segment", "echo-cart-7", 200, "ok", None),
        ("request", "/v1/segment", "anonymous", 401, "error", "unauthorized"),
        ("request", "/v1/segment", "echo-cart-7", 400, "error", "empty_body"),
        ("request", "/v1/models", "echo-cart-7", 200, "ok", None),
        ("stream", "/v1/stream", "echo-cart-7", 1000, "ok", None),
        ("stream", "/v1/stream", "anonymous", 1008, "error", "unauthorized"),
    ]
    assert lines[0]["frames"] == 10 and lines[0]["bytes_in"] > len(dcm) and lines[0]["model_id"] == "fake-0"
    assert lines[4]["frames"] == 10 and lines[4]["bytes_in"] == clip.size
    assert all(x["duration_ms"] >= 0 and x["time"].endswith("Z") and x["tls"] is False for x in lines)

    text = audit.read_text() + logs.getvalue()
    assert "POST /v1/segment" in logs.getvalue(), "the access log was captured"
    leaks = [n for n in (*NEEDLES, KEY) if n in text]
    assert not leaks, f"found in the audit trail or the logs: {leaks}"


def test_audit_goes_to_its_own_logger_when_no_file(make_server, caplog):
    caplog.set_level(logging.INFO, logger="echoseg.audit")
    server = make_server(fake_backend(), audit_log="")  # (the suite sets ECHOSEG_AUDIT_LOG)
    assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 200
    deadline = time.monotonic() + 10  # the line is written once the response has gone out

    def records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "echoseg.audit"]

    while not records() and time.monotonic() < deadline:
        time.sleep(0.02)
    records = records()
    assert len(records) == 1
    assert json.loads(records[0].getMessage())["principal"] == "anonymous"


def test_audit_log_can_be_moved_away(tmp_path: Path):
    """Rotation is the platform's: after logrotate moves the file, the next line opens a new one."""
    from service.core.audit import AuditTrail
    from service.core.keys import ANONYMOUS

    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(str(path))
    trail.record("request", ANONYMOUS, route="/v1/models", status=200, outcome="ok")
    path.rename(tmp_path / "audit.jsonl.1")
    trail.record("request", ANONYMOUS, route="/v1/models", status=200, outcome="ok")
    trail.close()
    assert len(path.read_text().splitlines()) == 1
    assert len((tmp_path / "audit.jsonl.1").read_text().splitlines()) == 1


def test_an_unwritable_audit_log_stops_the_start(tmp_path):
    from service.core.audit import AuditTrail

    with pytest.raises(OSError, match=r"audit_log .*/missing/audit\.jsonl: cannot append to it"):
        AuditTrail(str(tmp_path / "missing" / "audit.jsonl"))
