"""Service settings: environment variables with the ``ECHOSEG_`` prefix, overridable from the CLI.

Every knob an operator turns lives here, with the value it has when nothing is set. Example::

    ECHOSEG_MODEL=models/default ECHOSEG_BACKEND=onnxruntime ECHOSEG_MAX_BATCH=16 echoseg serve
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from echoseg.quality import QualityThresholds
from echoseg.region import DETECT_FRAMES

_Q = QualityThresholds()  # the defaults, set on synthetic data (echoseg/quality.py)

SCOPES = ("segment", "stream", "read-metrics")
BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt")
DEVICES = ("cpu", "cuda")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not every platform has sched_getaffinity
        return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    """Configuration of one service process."""

    model_config = SettingsConfigDict(env_prefix="ECHOSEG_", extra="ignore", protected_namespaces=())

    # -- model and backend --------------------------------------------------------------------
    model: str = Field(
        "models/default", description="a .onnx file, a TensorRT .engine/.plan, or a checkpoint dir"
    )
    backend: Literal["auto", "onnxruntime", "torch", "tensorrt"] = "auto"
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(0, ge=0, description="intra-op threads; 0 = the CPUs this process may use")
    ort_spinning: bool = Field(
        False, description="let idle ONNX Runtime threads spin (only on dedicated cores)"
    )
    ort_provider: Literal["auto", "cpu", "cuda", "tensorrt"] = Field(
        "auto",
        description="ONNX Runtime on a GPU: auto = the TensorRT provider when this build has it, then CUDA; "
        "cuda or tensorrt to insist on one",
    )
    fp16: bool = Field(False, description="let ONNX Runtime's TensorRT provider use fp16 kernels (GPU only)")
    int8: bool = Field(
        False,
        description="serve the model quantized to INT8 (QDQ, calibrated on simulated frames; quantized once "
        "into the cache) on ONNX Runtime; an int8 .onnx file is served as it is",
    )
    export_calibration: Literal["conv", "matmul"] = Field(
        "matmul",
        description="calibration form when a checkpoint is exported to ONNX at startup (matmul: dynamic "
        "batch, which multi-stream batching needs; conv: static batch 1)",
    )
    cache_dir: str = Field(
        "", description="where exported models are cached; default $XDG_CACHE_HOME/echoseg"
    )

    # -- batching -----------------------------------------------------------------------------
    max_batch: int = Field(16, ge=1, le=256, description="largest batch of windows the backend runs")
    max_batch_wait_ms: float = Field(1.5, ge=0.0, le=100.0, description="how long a batch waits to fill")
    ws_deflate: bool = Field(
        False,
        description="offer WebSocket per-message deflate; compressing raw frames costs more CPU than "
        "loopback or LAN bandwidth saves (about 12 ms per 640x480 gray8 frame on a shared 2-core machine)",
    )
    stream_fast_path: bool = Field(
        True,
        description="streams: PNG masks written directly with zlib on the event loop, and a batch does not "
        "wait to fill once every open stream has a frame in it; false = Pillow in a worker thread, full wait",
    )

    # -- limits -------------------------------------------------------------------------------
    max_streams: int = Field(16, ge=1, description="concurrent WebSocket streams")
    max_uploads: int = Field(4, ge=1, description="uploads processed at once; more get 503 overloaded")
    max_body_buffer_mb: float = Field(
        1024.0,
        gt=0,
        description="upload bodies held in memory, all requests together (arriving or being processed), "
        "MiB; a request that would pass it gets 503. Slow senders hold only what they sent",
    )
    max_upload_mb: float = Field(200.0, gt=0, description="largest request body, MiB")
    max_frames: int = Field(2000, ge=1, description="most frames in an uploaded clip")
    max_frame_width: int = Field(1024, ge=1)
    max_frame_height: int = Field(1024, ge=1)
    max_decoded_mb: float = Field(
        1024.0,
        gt=0,
        description="decoded gray pixels one upload may produce, MiB, checked frame by frame while decoding",
    )
    stream_queue: int = Field(
        32, ge=1, description="frames one stream may have in flight before 'overloaded'"
    )
    stream_summary_frames: int = Field(1500, ge=1, description="latest frames the stream summary covers")

    # -- real clips: region and quality -------------------------------------------------------
    region_frames: int = Field(
        DETECT_FRAMES,
        ge=1,
        le=16,  # an upload detects from its first decoded chunk (16 frames)
        description="first frames the ultrasound region is detected from (uploads, and streams "
        "without a region in start)",
    )
    quality_min_signal: float = Field(
        _Q.min_signal, ge=0, description="gray-level std inside the fan below which a frame is blank (no_lv)"
    )
    quality_min_area: float = Field(
        _Q.min_area, ge=0, le=1, description="mask share of the fan below which a frame has no LV"
    )
    quality_max_area: float = Field(
        _Q.max_area, ge=0, le=1, description="mask share of the fan above which a frame is low_confidence"
    )
    quality_min_confidence: float = Field(
        _Q.min_confidence, ge=0, le=1, description="frame confidence below which a frame is low_confidence"
    )
    quality_max_flagged_share: float = Field(
        _Q.max_flagged_share, ge=0, le=1, description="share of flagged frames above which EF is withheld"
    )

    # -- timeouts ------------------------------------------------------------------------------
    body_timeout_s: float = Field(60.0, gt=0, description="longest an upload's body may take to arrive")
    body_idle_timeout_s: float = Field(
        10.0, gt=0, description="longest wait for the next piece of an upload's body"
    )
    stream_start_timeout_s: float = Field(
        10.0, gt=0, description="longest a new WebSocket may wait before sending start"
    )
    stream_idle_timeout_s: float = Field(
        30.0, gt=0, description="longest a started stream may wait between messages"
    )

    # -- security, lifecycle, telemetry -------------------------------------------------------
    api_keys: str = Field(
        "",
        description="comma-separated bearer keys, each allowed every scope (its id is a hash prefix); "
        "empty and no api_key_file = no authentication",
    )
    api_key_file: str = Field(
        "",
        description="JSON key file (a Kubernetes Secret): key id -> SHA-256 of the key and its scopes; "
        "re-read when it changes or on SIGHUP, no restart",
    )
    protect_metrics: bool = Field(
        False, description="GET /metrics needs a key with the read-metrics scope (default: open)"
    )
    reload_interval_s: float = Field(
        2.0, gt=0, le=3600, description="how often the key file and TLS files are checked for changes"
    )
    ssl_certfile: str = Field("", description="PEM certificate chain: serve HTTPS and wss:// (empty = plain)")
    ssl_keyfile: str = Field("", description="PEM private key of ssl_certfile (empty: it is in the certfile)")
    ssl_ca_certs: str = Field("", description="PEM CA bundle that client certificates must chain to (mTLS)")
    ssl_client_cert: Literal["none", "optional", "required"] = Field(
        "none",
        description="client certificates (needs ssl_ca_certs): required = mutual TLS, every client; "
        "optional = verified when sent; a verified certificate authenticates as its subject",
    )
    client_cert_scopes: str = Field(
        "segment,stream", description="scopes a verified client certificate holds, comma-separated"
    )
    audit_log: str = Field(
        "",
        description="file of the audit trail (one JSON line per request and stream); empty = the "
        "'echoseg.audit' logger (stderr with the other logs)",
    )
    drain_timeout_s: float = Field(
        10.0,
        ge=0.0,
        description="how long shutdown waits for streams and uploads to end; what is left is cancelled",
    )
    log_level: str = "INFO"
    budget_ms: float = Field(32.0, gt=0, description="per-frame latency budget; slower frames are counted")

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, v: str) -> str:
        levels = ("DEBUG", "INFO", "WARNING", "ERROR")
        if v.upper() not in levels:
            raise ValueError(f"log_level must be one of {levels}, got {v!r}")
        return v.upper()

    @model_validator(mode="after")
    def _check_quality(self) -> Settings:
        self.quality_thresholds  # noqa: B018 - raises a ValueError naming what is inconsistent
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if (self.ssl_keyfile or self.ssl_ca_certs) and not self.ssl_certfile:
            raise ValueError("ssl_keyfile and ssl_ca_certs need ssl_certfile (the server's certificate)")
        if self.ssl_client_cert != "none" and not self.ssl_ca_certs:
            raise ValueError(f"ssl_client_cert={self.ssl_client_cert} needs ssl_ca_certs (the CA bundle)")
        unknown = set(self.cert_scopes) - set(SCOPES)
        if unknown:
            raise ValueError(f"client_cert_scopes: unknown {sorted(unknown)}; valid scopes: {list(SCOPES)}")
        return self

    # -- derived ------------------------------------------------------------------------------
    @property
    def quality_thresholds(self) -> QualityThresholds:
        return QualityThresholds(
            min_signal=self.quality_min_signal,
            min_area=self.quality_min_area,
            max_area=self.quality_max_area,
            min_confidence=self.quality_min_confidence,
            max_flagged_share=self.quality_max_flagged_share,
        )

    @property
    def keys(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def cert_scopes(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.client_cert_scopes.split(",") if s.strip())

    @property
    def tls(self) -> bool:
        return bool(self.ssl_certfile)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_buffer_bytes(self) -> int:
        return int(self.max_body_buffer_mb * 1024 * 1024)

    @property
    def max_decoded_bytes(self) -> int:
        return int(self.max_decoded_mb * 1024 * 1024)

    @property
    def intra_op_threads(self) -> int:
        return self.threads or available_cpus()

    @property
    def max_batch_wait_s(self) -> float:
        return self.max_batch_wait_ms / 1000.0

    @property
    def budget_s(self) -> float:
        return self.budget_ms / 1000.0
