"""The published REST contract: the committed schema is the code's, and live answers match it.

Each answer of a real server (fake backend: the contract is the service's, not the model's) is
validated against the schema its route declares for that status, and every status it answers
with must be declared.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from service.api.negotiate import preferred
from service.api.outputs import OUTPUTS
from service.codecs.clip import CLIP_KINDS, MEDIA_TYPES
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
    spec = json.loads(render())
    body = spec["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert set(body) == {*MEDIA_TYPES, "multipart/form-data"}
    assert spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]


def test_one_typed_operation_per_output():
    """Each row of the outputs table is an operation with one request type and one answer type
    (binary answers also as octet-stream), the clip's format named by the path."""
    spec = json.loads(render())
    typed = {
        op["operationId"]: (path, op)
        for path, item in spec["paths"].items()
        if path.startswith("/v1/segment/")
        for op in item.values()
    }
    assert set(typed) == {"segment_" + name.replace("-", "_") for name in OUTPUTS}
    assert spec["components"]["schemas"]["ClipKind"]["enum"] == list(CLIP_KINDS)
    for name, row in OUTPUTS.items():
        path, op = typed["segment_" + name.replace("-", "_")]
        assert path == (f"/v1/segment/dicom/{name}" if row.needs_dicom else f"/v1/segment/{{kind}}/{name}")
        assert list(op["requestBody"]["content"]) == ["application/octet-stream"]
        answers = set(op["responses"]["200"]["content"])
        binary = {row.media_type, "application/octet-stream"}
        assert answers == ({"application/json"} if row.media_type == "application/json" else binary)


def test_typed_operations_answer_as_declared(served):
    spec, client = served
    clip = npy(moving_disc_clip(frames=6))
    octet = {"content-type": "application/octet-stream"}
    ok = client.post("/v1/segment/npy/json", content=clip, headers=octet)
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
    check(spec, "post", "/v1/segment/{kind}/json", ok)
    own_type = client.post(
        "/v1/segment/npy/json", content=clip, headers={"content-type": "application/x-npy"}
    )
    assert own_type.status_code == 200 and own_type.json()["masks"] == ok.json()["masks"]
    plain = client.post("/v1/segment", content=clip, headers={"content-type": "application/x-npy"})
    assert plain.json()["masks"] == ok.json()["masks"]

    npz = client.post("/v1/segment/npy/npz", content=clip)  # no Content-Type: octet-stream (RFC 9110)
    as_octets = client.post(
        "/v1/segment/npy/npz", content=clip, headers={"accept": "application/octet-stream"}
    )
    assert npz.headers["content-type"] == "application/x-npz"
    assert as_octets.headers["content-type"] == "application/octet-stream"
    for answer in (npz, as_octets):
        check(spec, "post", "/v1/segment/{kind}/npz", answer)
        assert np.load(io.BytesIO(answer.content))["masks"].shape == (6, 48, 40)

    wrong_type = client.post("/v1/segment/npy/json", content=clip, headers={"content-type": "video/mp4"})
    unknown_kind = client.post("/v1/segment/gif/json", content=clip, headers=octet)
    not_dicom = client.post("/v1/segment/dicom/dicom-seg", content=clip, headers=octet)
    assert [r.status_code for r in (wrong_type, unknown_kind, not_dicom)] == [415, 422, 422]
    check(spec, "post", "/v1/segment/{kind}/json", wrong_type)
    check(spec, "post", "/v1/segment/{kind}/json", unknown_kind)
    check(spec, "post", "/v1/segment/dicom/dicom-seg", not_dicom)
    no_such_operation = client.post("/v1/segment/npy/dicom-seg", content=clip, headers=octet)
    assert no_such_operation.status_code == 404 and no_such_operation.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/dicom"),
        ("*/*", "application/dicom"),
        ("application/octet-stream", "application/octet-stream"),
        ("application/*", "application/dicom"),
        ("application/dicom;q=0.5, application/octet-stream", "application/octet-stream"),
        ("application/octet-stream;q=0.2, */*;q=0.9", "application/dicom"),
        ("text/html", "application/dicom"),  # nothing offered is acceptable: the service's own type
        ("application/octet-stream;q=oops, application/dicom", "application/dicom"),
    ],
)
def test_accept_chooses_the_answer_type(accept, chosen):
    assert preferred(accept, ("application/dicom", "application/octet-stream")) == chosen


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
