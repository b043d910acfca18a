"""The published REST contract: the committed schema is the code's, and live answers match it.

Each answer of a real server (fake backend: the contract is the service's, not the model's) is
validated against the schema its route declares for that status, and every status it answers
with must be declared.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from service.openapi import render

from .conftest import fake_backend, moving_disc_clip

REPO = Path(__file__).resolve().parents[2]


def test_committed_schema_is_the_codes():
    committed = (REPO / "docs" / "openapi.json").read_text()
    assert committed == render(), "docs/openapi.json is stale: run `python -m service.openapi`"


def npy(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, frames)
    return buf.getvalue()


def check(spec: dict, method: str, path: str, response: httpx.Response) -> None:
    """``response`` has a status ``path`` declares, and its JSON body matches that schema."""
    declared = spec["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in declared, f"{method.upper()} {path} answered {status}, declared: {sorted(declared)}"
    content = declared[status].get("content", {})
    media = response.headers["content-type"].split(";")[0]
    assert media in content, f"{method.upper()} {path} {status} answered {media}, declared: {sorted(content)}"
    schema = content[media]["schema"]
    if media == "application/json":
        validator = Draft202012Validator({**schema, "components": spec["components"]})
        errors = [
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(response.json())
        ]
        assert not errors, f"{method.upper()} {path} {status}: {errors[:5]}"


@pytest.fixture
def served(make_server):
    server = make_server(fake_backend(), max_batch=8, api_keys="contract-key")
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    client = httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": "Bearer contract-key"})
    yield spec, client
    client.close()


def test_probes_and_models_match_their_schemas(served):
    spec, client = served
    check(spec, "get", "/healthz", client.get("/healthz"))
    check(spec, "get", "/readyz", client.get("/readyz"))
    check(spec, "get", "/v1/models", client.get("/v1/models"))
    check(spec, "get", "/v1/models", client.get("/v1/models", headers={"Authorization": "Bearer wrong"}))
    metrics = client.get("/metrics")
    assert (
        metrics.status_code == 200
        and "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    )


def test_segment_answers_match_their_schemas(served):
    spec, client = served
    clip = moving_disc_clip(frames=10)
    ok = client.post("/v1/segment", content=npy(clip), headers={"content-type": "application/x-npy"})
    assert ok.status_code == 200
    check(spec, "post", "/v1/segment", ok)
    npz = client.post(
        "/v1/segment?output=npz", content=npy(clip), headers={"content-type": "application/x-npy"}
    )
    check(spec, "post", "/v1/segment", npz)
    errors = [
        client.post("/v1/segment", content=b"hello", headers={"content-type": "text/plain"}),  # 415
        client.post("/v1/segment", content=b"not a clip", headers={"content-type": "application/x-npy"}),
        client.post("/v1/segment", content=b"", headers={"content-type": "video/mp4"}),  # 400
        client.post(
            "/v1/segment?output=gif", content=npy(clip), headers={"content-type": "application/x-npy"}
        ),
        client.post("/v1/segment", content=npy(clip), headers={"Authorization": "Bearer wrong"}),  # 401
    ]
    assert [r.status_code for r in errors] == [415, 422, 400, 422, 401]
    for response in errors:
        check(spec, "post", "/v1/segment", response)
        assert response.json()["type"] == "error"


def test_request_body_declares_every_accepted_type():
    import json

    spec = json.loads(render())
    body = spec["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    from service.codecs.clip import MEDIA_TYPES

    assert set(body) == {*MEDIA_TYPES, "multipart/form-data"}
    assert spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]


def test_dicom_outputs_match_their_schemas(served):
    pytest.importorskip("highdicom")
    from .dicom import dicom_bytes

    spec, client = served
    data = dicom_bytes(moving_disc_clip(frames=10), delta_cm=(0.03, 0.03))
    for output in ("dicom-seg", "dicom-sr"):
        ok = client.post(
            f"/v1/segment?output={output}", content=data, headers={"content-type": "application/dicom"}
        )
        assert ok.status_code == 200 and ok.headers["content-type"] == "application/dicom"
        check(spec, "post", "/v1/segment", ok)
        refused = client.post(
            f"/v1/segment?output={output}", content=npy(moving_disc_clip(frames=4)),
            headers={"content-type": "application/x-npy"},
        )  # fmt: skip
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_request"
        check(spec, "post", "/v1/segment", refused)
