"""The stream's published contract, ``docs/asyncapi.yaml``: valid for the AsyncAPI project's own
parser, and true to the live server's messages (every text message validated against its schema,
every mask's binary layout checked, every close code as documented).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from jsonschema import Draft7Validator

from service.client import exchange

from .conftest import fake_backend

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "asyncapi.yaml"
TOOLS = REPO / "tools" / "asyncapi"


def validator(name: str) -> Draft7Validator:
    doc = yaml.safe_load(DOC.read_text())
    return Draft7Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


def assert_valid(name: str, message: dict) -> None:
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator(name).iter_errors(message)]
    assert not errors, f"{name} message {message} breaks docs/asyncapi.yaml: {errors}"


@pytest.mark.skipif(
    shutil.which("node") is None or not (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir(),
    reason="needs node and tools/asyncapi/node_modules (make test installs it with npm)",
)
def test_the_asyncapi_parser_accepts_the_document():
    done = subprocess.run(
        ["node", str(TOOLS / "validate.mjs"), str(DOC)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 error(s), 0 warning(s)" in done.stdout, done.stdout


def test_the_error_codes_are_the_services():
    from service.core.errors import ERRORS

    doc = yaml.safe_load(DOC.read_text())
    assert set(doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]) == set(ERRORS)


def test_live_messages_follow_the_document(make_server):
    server = make_server(fake_backend(), max_batch=8)
    url = server.url.replace("http", "ws") + "/v1/stream"
    w, h, n = 24, 16, 6
    start = {
        "type": "start",
        "width": w,
        "height": h,
        "encoding": "gray8",
        "mask_encoding": "gray8",
        "fps": 25,
    }
    assert_valid("Start", start)
    frames = [np.full((h, w), 40 * i, np.uint8).tobytes() for i in range(n)]
    end = {"type": "end"}
    received, code = asyncio.run(exchange(url, [json.dumps(start), *frames, json.dumps(end)]))
    texts = [json.loads(m) for m in received if isinstance(m, str)]
    masks = [m for m in received if isinstance(m, bytes)]
    assert code == 1000 and [t["type"] for t in texts] == ["ready", "summary"]
    assert_valid("Ready", texts[0])
    assert_valid("Summary", texts[1])
    assert [struct.unpack("<I", m[:4])[0] for m in masks] == list(range(n))
    assert all(len(m) == 4 + w * h and set(m[4:]) <= {0, 1} for m in masks)

    for messages, close in (
        ([json.dumps({"type": "start", "width": 0, "height": 4})], 1003),  # invalid_start
        ([b"\x00" * 4], 1003),  # binary_before_start
        ([json.dumps(start), b"\x00" * 5], 1003),  # wrong_frame_size
    ):
        received, code = asyncio.run(exchange(url, messages))
        error = json.loads([m for m in received if isinstance(m, str)][-1])
        assert_valid("Error", error)
        assert code == close, (error, code)


def test_a_refused_key_is_an_error_message_and_1008(make_server):
    server = make_server(fake_backend(), api_keys="stream-key")
    url = server.url.replace("http", "ws") + "/v1/stream"
    received, code = asyncio.run(exchange(url, [json.dumps({"type": "start", "width": 8, "height": 8})]))
    error = json.loads(received[-1])
    assert_valid("Error", error)
    assert error["code"] == "unauthorized" and code == 1008


def test_integral_numbers_are_integers_on_both_sides(make_server):
    """``"width": 24.0`` is an integer to the schema (JSON Schema) and to the server alike; 24.5 to
    neither. The ready message answers in integers; masks carry the mask_format 2 layout."""
    server = make_server(fake_backend(), max_batch=8)
    url = server.url.replace("http", "ws") + "/v1/stream"
    w, h = 24, 16
    start = {
        "type": "start",
        "width": float(w),
        "height": float(h),
        "mask_encoding": "gray8",
        "mask_format": 2.0,
        "region": {"x0": 0.0, "y0": 0.0, "x1": 24.0, "y1": 16.0, "fan": [[0.0, 0], [23, 0.0], [12.0, 15.0]]},
    }
    assert_valid("Start", start)
    frames = [np.full((h, w), 40 * i, np.uint8).tobytes() for i in range(3)]
    received, code = asyncio.run(exchange(url, [json.dumps(start), *frames, json.dumps({"type": "end"})]))
    texts = [json.loads(m) for m in received if isinstance(m, str)]
    assert code == 1000 and [t["type"] for t in texts] == ["ready", "summary"], texts
    ready = texts[0]
    assert_valid("Ready", ready)
    assert (ready["width"], ready["height"], ready["mask_format"]) == (w, h, 2)
    assert all(type(ready[k]) is int for k in ("width", "height", "mask_format"))
    assert ready["region"]["fan"] == [[0, 0], [23, 0], [12, 15]]
    masks = [m for m in received if isinstance(m, bytes)]
    assert len(masks) == 3 and all(len(m) == 4 + 1 + 1 + w * h for m in masks)  # index, flag, confidence

    for field, value in (("width", 24.5), ("mask_format", 2.5)):
        bad = {**start, field: value}
        assert list(validator("Start").iter_errors(bad)), f"{field}={value} should break the schema"
        received, code = asyncio.run(exchange(url, [json.dumps(bad)]))
        error = json.loads(received[-1])
        assert error["code"] == "invalid_start" and field in error["detail"] and code == 1003
