"""The audit trail fails closed: when its file cannot be written, no work goes unaudited."""

from __future__ import annotations

import io
import json
import shutil
import time

import httpx
import numpy as np

from tests.service.conftest import moving_disc_clip

NPY = {"Content-Type": "application/x-npy"}


def npy(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, frames)
    return buf.getvalue()


def post(server) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/segment", content=npy(moving_disc_clip(4)), headers=NPY, timeout=30)


def audit_lines(trail, at_least: int) -> list[dict]:
    """The trail's lines once it holds ``at_least`` (each is written just after its answer)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = trail.read_text() if trail.exists() else ""
        if len(text.splitlines()) >= at_least:
            break
        time.sleep(0.05)
    return [json.loads(x) for x in text.splitlines()]


def test_a_vanished_audit_folder_refuses_work_until_it_is_back(fake, tmp_path, caplog):
    folder = tmp_path / "audit"
    folder.mkdir()
    trail = folder / "audit.jsonl"
    server = fake(audit_log=str(trail))
    assert post(server).status_code == 200
    assert len(audit_lines(trail, 1)) == 1

    shutil.rmtree(folder)  # the volume went away
    refused = post(server)
    assert refused.status_code == 503, "work was done while its audit line could not be written"
    assert refused.json()["code"] == "not_ready" and "audit trail" in refused.json()["detail"]
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["problems"] == ["audit_unwritable"]
    assert any(r.levelname == "ERROR" and "audit trail" in r.getMessage() for r in caplog.records)
    assert "Traceback" not in caplog.text

    folder.mkdir()  # back: the trail is reopened and work resumes
    assert post(server).status_code == 200
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    lines = audit_lines(trail, 1)  # a new file: the refused requests' lines went with the folder
    assert lines[-1]["route"] == "/v1/segment" and lines[-1]["status"] == 200


def test_not_ready_mode_only_turns_readiness_off(fake, tmp_path):
    folder = tmp_path / "audit"
    folder.mkdir()
    server = fake(audit_log=str(folder / "audit.jsonl"), audit_on_failure="not_ready")
    shutil.rmtree(folder)
    assert post(server).status_code == 200
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["problems"] == ["audit_unwritable"]
