"""The REST contract as types: every JSON body the service answers with, and its error body.

These models are what ``/openapi.json`` (committed as ``docs/openapi.json``) publishes, so a client
generated from the schema knows every field. The routes build their bodies from the same code
paths the models describe; ``tests/service/test_openapi.py`` checks live answers against the
schemas and fails when the committed schema drifts from the code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from echoseg.quality import EF_NULL_REASONS, FLAGS
from echoseg.region import SOURCES
from echoseg.runtime import DEVICES, RUNTIME_NAMES
from service.core.errors import ERRORS

ErrorCode = Literal[tuple(ERRORS)]  # type: ignore[valid-type]


class ErrorBody(BaseModel):
    """Every error, on every route: the code names what was wrong (docs/service.md, "Errors")."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "error",
                    "code": "unsupported_media_type",
                    "detail": "unsupported clip type 'text/plain'",
                }
            ]
        }
    )

    type: Literal["error"] = "error"
    code: ErrorCode  # type: ignore[valid-type]
    detail: str


class ModelRef(BaseModel):
    id: str = Field(description="<preset>-<12 hex digits of the SHA-256 of the weights file>")
    preset: str
    backend: str


class ModelInfo(BaseModel):
    """One served model and how it runs."""

    id: str
    preset: str
    backend: Literal[RUNTIME_NAMES] | str  # type: ignore[valid-type]
    device: Literal[DEVICES]  # type: ignore[valid-type]
    precision: Literal["fp32", "fp16"]
    input_size: int = Field(description="side of the square the frames are resized to")
    num_frames: int = Field(description="frames per window (k)")
    window: Literal["centered", "causal"]
    lookahead_frames: int = Field(description="frames after a target frame its mask waits for")
    threshold: float
    calibration: Literal["conv", "matmul"]
    static_batch: int | None
    batch_range: list[int | None] = Field(
        description="[min, max] windows one model call takes (max null: any)"
    )
    max_batch: int
    budget_ms: float


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    model_loaded: bool
    draining: bool
    problems: list[Literal["model_loading", "draining", "no_api_keys", "audit_unwritable"]] = []


class Spacing(BaseModel):
    row: float
    col: float
    unit: Literal["mm"]


class RleMasks(BaseModel):
    """Per-frame masks, run-length encoded: row-major, alternating runs starting with zeros."""

    encoding: Literal["rle"]
    order: Literal["row-major"]
    first_run: Literal[0]
    size: list[int] = Field(description="[height, width]")
    counts: list[list[int]] = Field(description="one list of run lengths per frame")


class Beat(BaseModel):
    ed: int
    es: int
    edv: float
    esv: float
    ef: float | None


class Region(BaseModel):
    """The ultrasound image region the frames were cropped to (source pixels, x1/y1 exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int
    source: Literal[SOURCES] = Field(  # type: ignore[valid-type]
        description="dicom (SequenceOfUltrasoundRegions), dicom_rescaled (a DICOM region left at the "
        "coordinates of a resampled file, rescaled onto the pixels), detected (from the frames), client "
        "(stream start), full (the whole frame: an already cropped clip, nothing found, or where the model "
        "found the LV best)"
    )
    fan: list[list[int]] | None = Field(description="the fan polygon [[x, y], ...]; outside it is blanked")


class Quality(BaseModel):
    """How many frames came with which flag, and why, in words."""

    frames_ok: int
    frames_low_confidence: int
    frames_no_lv: int
    frames_blank: int = Field(description="no_lv frames whose input carries no image at all")
    mean_confidence: float | None
    reason: str | None = Field(description="null when every frame is ok")


class SegmentResult(BaseModel):
    """``POST /v1/segment`` with ``output=json``: masks, the LV area curve, ED/ES, EF, timings."""

    model_config = ConfigDict(extra="allow")  # new read-outs may be added; none is ever removed

    model: ModelRef
    frames: int
    height: int
    width: int
    fps: float | None
    spacing: Spacing | None = Field(description="mm per pixel when the file says (DICOM)")
    masks: RleMasks | None
    area: list[float] = Field(description="LV area per frame, in area_unit")
    area_unit: Literal["pixel", "mm2"]
    volume_unit: Literal["pixel3", "mm3"]
    ed_frames: list[int]
    es_frames: list[int]
    beats: list[Beat]
    ef: float | None = Field(description="ejection fraction over the clip, %; null when undefined")
    ef_null_reason: Literal[EF_NULL_REASONS] | None = Field(  # type: ignore[valid-type]
        description="why ef is null (null when it is given)"
    )
    region: Region | None
    confidence: list[float] = Field(description="per frame, in [0, 1]; 0 where no LV was found")
    flags: list[Literal[FLAGS]] = Field(description="per frame: ok, low_confidence or no_lv")  # type: ignore[valid-type]
    quality: Quality
    warnings: list[str] = Field(description="e.g. a truncated file: how many frames were decoded of how many")
    timings_ms: dict[str, float]


def error_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each HTTP status its ``codes`` can answer, with the error body."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ERRORS[code].http_status, []).append(code)
    return {
        status: {
            "model": ErrorBody,
            "description": "; ".join(f"`{c}`: {ERRORS[c].meaning}" for c in sorted(names)),
        }
        for status, names in sorted(by_status.items())
    }
