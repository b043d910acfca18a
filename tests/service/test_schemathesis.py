"""Schemathesis, a property-based API tester, against a live server from the committed schema.

It generates requests from ``docs/openapi.json`` (bounded: a fixed seed, at most 10 examples per
operation and 45 s) and checks every answer: no 5xx, the status and content type are declared,
the body matches the declared schema. One check is left out, ``positive_data_acceptance``: a
schema-valid body of ``POST /v1/segment`` is any bytes, while only a decodable clip can be
accepted, which no schema can express; such bodies get the declared 415/422 error bodies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import fake_backend

REPO = Path(__file__).resolve().parents[2]
ST = shutil.which("st", path=str(Path(__import__("sys").executable).parent)) or shutil.which("st")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(ST is None, reason="needs schemathesis (the dev extra)"),
]


def test_schemathesis_finds_no_contract_violation(make_server, tmp_path):
    server = make_server(fake_backend(), max_batch=8, api_keys="contract-key")
    cmd = [
        ST, "run", str(REPO / "docs" / "openapi.json"), "--url", server.url,
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "10", "--max-time", "45", "--seed", "1",
        "--header", "Authorization: Bearer contract-key", "--request-timeout", "30",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    summary = done.stdout[done.stdout.find("SUMMARY") :]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    spec = json.loads((REPO / "docs" / "openapi.json").read_text())
    operations = sum(len(item) for item in spec["paths"].values())
    assert f"Tested: {operations}" in summary and " passed" in summary, summary
