"""The REST contract as clients we did not write read it: from ``docs/openapi.json`` alone.

- ``openapi-spec-validator`` (OpenAPI 3.1 meta-schema) accepts the document;
- ``openapi-python-client`` generates a Python package into a temporary folder, which is imported
  unedited and used against a live server: an AVI, a DICOM and an NPY clip each to its typed
  operation (``POST /v1/segment/{kind}/json``), JSON masks back, and the DICOM to
  ``POST /v1/segment/dicom/dicom-seg``, a DICOM Segmentation back (read with pydicom);
- ``openapi-typescript`` generates the TypeScript types, ``tsc --strict`` compiles
  ``tools/openapi-ts/roundtrip.mts`` against them (openapi-fetch), and node runs the same round
  trips against a live server.

The generators' warnings are compared with what is known: openapi-python-client cannot type the
raw clip types of the untyped ``POST /v1/segment`` (it knows JSON, multipart and octet-stream
bodies only) and warns once per type; any other warning fails. The servers run the fake backend:
the contract is the service's, not the model's.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.codecs.clip import MEDIA_TYPES

from .conftest import fake_backend, moving_disc_clip
from .dicom import dicom_bytes
from .test_units import avi_bytes, npy_bytes

REPO = Path(__file__).resolve().parents[2]
OPENAPI = REPO / "docs" / "openapi.json"
TS_TOOLS = REPO / "tools" / "openapi-ts"
BIN = Path(sys.executable).parent
OPC = shutil.which("openapi-python-client", path=str(BIN)) or shutil.which("openapi-python-client")
NODE = shutil.which("node")
KEY = "generated-client-key"
FRAMES = 10
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def node_major() -> int:
    run = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=30)
    return int(run.stdout.strip().lstrip("v").split(".")[0])


needs_ts_tools = pytest.mark.skipif(
    NODE is None
    or not (TS_TOOLS / "node_modules" / "openapi-fetch").is_dir()
    or not (TS_TOOLS / "node_modules" / "typescript").is_dir(),
    reason="needs node and tools/openapi-ts/node_modules (make test installs it with npm)",
)


@pytest.fixture
def clips() -> dict[str, bytes]:
    """The same synthetic clip as an AVI (MJPG), a DICOM cine and an NPY, ``FRAMES`` frames each."""
    frames = moving_disc_clip(frames=FRAMES)
    return {
        "avi": avi_bytes(frames),
        "dicom": dicom_bytes(frames, delta_cm=(0.03, 0.03)),
        "npy": npy_bytes(frames),
    }


@pytest.fixture
def server(make_server):
    return make_server(fake_backend(), max_batch=8, api_keys=KEY)


def test_the_document_is_valid_openapi_3_1():
    validator = pytest.importorskip(
        "openapi_spec_validator", reason="needs openapi-spec-validator (dev extra)"
    )
    from openapi_spec_validator.validation import OpenAPIV31SpecValidator
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    spec = json.loads(OPENAPI.read_text())
    assert spec["openapi"].startswith("3.1.")
    validator.validate(spec, cls=OpenAPIV31SpecValidator)
    # it is strict where it matters: a Media Type Object has no `description` (the document had one)
    broken = copy.deepcopy(spec)
    broken["paths"]["/v1/segment"]["post"]["requestBody"]["content"]["application/x-npy"]["description"] = "x"
    with pytest.raises(OpenAPIValidationError, match="description"):
        validator.validate(broken, cls=OpenAPIV31SpecValidator)


def generator_warnings(log: str) -> list[tuple[str, str]]:
    """``(operation, problem)`` of each warning or error block openapi-python-client printed."""
    return re.findall(r"^(?:WARNING|ERROR) parsing (\S+ \S+) within \S+\n\n(.+)$", log, re.MULTILINE)


@pytest.fixture
def python_client(tmp_path, monkeypatch):
    """The package openapi-python-client generates from the document, imported from ``tmp_path``."""
    if OPC is None:
        pytest.skip("needs openapi-python-client (the dev extra, Python >= 3.11)")
    cmd = [OPC, "generate", "--path", str(OPENAPI), "--output-path", str(tmp_path / "echoseg_client")]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff hooks
    run = subprocess.run(
        [*cmd, "--meta", "none"], capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    warnings = generator_warnings(log)
    print("openapi-python-client warnings:", *warnings, sep="\n  ")
    raw_types = {("POST /v1/segment", f"Unsupported content type {media}") for media in MEDIA_TYPES}
    assert set(warnings) == raw_types and len(warnings) == len(raw_types), log[-4000:]
    assert log.count("WARNING") + log.count("ERROR") == len(raw_types), log[-4000:]
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield importlib.import_module("echoseg_client")
    finally:
        for name in [m for m in sys.modules if m == "echoseg_client" or m.startswith("echoseg_client.")]:
            del sys.modules[name]


def test_generated_python_client_round_trips(python_client, server, clips):
    pydicom = pytest.importorskip("pydicom")
    segment_dicom_seg = importlib.import_module("echoseg_client.api.segment.segment_dicom_seg")
    segment_json = importlib.import_module("echoseg_client.api.segment.segment_json")
    models = importlib.import_module("echoseg_client.models")
    types = importlib.import_module("echoseg_client.types")

    client = python_client.AuthenticatedClient(base_url=server.url, token=KEY, timeout=httpx.Timeout(60))
    with client:
        for kind, data in clips.items():
            result = segment_json.sync(
                models.ClipKind(kind), client=client, body=types.File(io.BytesIO(data))
            )
            assert isinstance(result, models.SegmentResult), f"{kind}: {result}"
            assert result.frames == FRAMES and len(result.masks.counts) == FRAMES, kind
            assert result.masks.size == [result.height, result.width] == [48, 40], kind
        # the typed operation is the same handler as POST /v1/segment: the same masks
        plain = httpx.post(
            f"{server.url}/v1/segment",
            content=clips["npy"],
            headers={"Content-Type": "application/x-npy", "Authorization": f"Bearer {KEY}"},
            timeout=60,
        )
        assert plain.status_code == 200 and plain.json()["masks"]["counts"] == result.masks.counts

        seg = segment_dicom_seg.sync(client=client, body=types.File(io.BytesIO(clips["dicom"])))
        assert isinstance(seg, types.File), seg
        ds = pydicom.dcmread(seg.payload)
        assert ds.SOPClassUID == SEGMENTATION_STORAGE and int(ds.NumberOfFrames) == FRAMES

        refused = segment_json.sync_detailed(
            models.ClipKind.NPY, client=client, body=types.File(io.BytesIO(b"these bytes are no clip"))
        )
        assert refused.status_code == 422 and isinstance(refused.parsed, models.ErrorBody)
        assert refused.parsed.code.value == "corrupt_input"


@needs_ts_tools
def test_generated_typescript_client_round_trips(server, clips, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    if node_major() < 18:
        pytest.skip("the TypeScript round trip needs node >= 18 (its fetch)")
    work = tmp_path / "ts"
    work.mkdir()
    (work / "node_modules").symlink_to(TS_TOOLS / "node_modules", target_is_directory=True)
    for name in ("roundtrip.mts", "tsconfig.json"):
        shutil.copy(TS_TOOLS / name, work / name)

    def node(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([NODE, *args], capture_output=True, text=True, timeout=timeout, cwd=work)

    gen = node(str(TS_TOOLS / "generate.mjs"), str(OPENAPI), str(work / "schema.d.ts"))
    assert gen.returncode == 0, gen.stderr[-4000:]
    warnings = [line.strip() for line in gen.stderr.splitlines() if "⚠" in line]
    print("openapi-typescript warnings:", *warnings, sep="\n  ")
    assert not warnings, warnings
    tsc = node(str(work / "node_modules" / "typescript" / "bin" / "tsc"), "-p", str(work))
    assert tsc.returncode == 0, "tsc: " + tsc.stdout[-4000:] + tsc.stderr[-2000:]

    clip_dir = tmp_path / "clips"
    clip_dir.mkdir()
    for kind, suffix in (("avi", "avi"), ("dicom", "dcm"), ("npy", "npy")):
        (clip_dir / f"clip.{suffix}").write_bytes(clips[kind])
    run = node(str(work / "out" / "roundtrip.mjs"), server.url, KEY, str(clip_dir), str(tmp_path))
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for kind in ("avi", "dicom", "npy"):
        assert out[kind] == {"frames": FRAMES, "masks": FRAMES}, out
    assert out["refused"] == {"status": 422, "code": "corrupt_input"}, out
    assert out["seg_type"] == "application/dicom", out
    seg = (tmp_path / "seg.dcm").read_bytes()
    assert len(seg) == out["seg_bytes"]
    ds = pydicom.dcmread(io.BytesIO(seg))
    assert ds.SOPClassUID == SEGMENTATION_STORAGE and int(ds.NumberOfFrames) == FRAMES
    assert np.array_equal(ds.pixel_array.shape, (FRAMES, 48, 40))
