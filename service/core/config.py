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
from echoseg.runtime import BACKENDS, DEFAULT_MAX_BATCH, DEVICES

_Q = QualityThresholds()  # the defaults, set on synthetic data (echoseg/quality.py)

SCOPES = ("segment", "stream", "read-metrics")
MAX_BATCH_HELP = (
    "largest batch of windows the batcher gathers for one call of the model; "
    "also sizes the TensorRT profile and the CUDA graphs the service builds"
)


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
    backend: Literal[BACKENDS] = "auto"  # type: ignore[valid-type]
    device: Literal[DEVICES] = "cpu"  # type: ignore[valid-type]
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
    export_calibration: Literal["conv", "matmul"] = Field(
        "matmul",
        description="calibration form when a checkpoint is exported to ONNX at startup (matmul: dynamic "
        "batch, which multi-stream batching needs; conv: static batch 1)",
    )
    cache_dir: str = Field(
        "", description="where exported models are cached; default $XDG_CACHE_HOME/echoseg"
    )

    # -- batching -----------------------------------------------------------------------------
    max_batch: int = Field(DEFAULT_MAX_BATCH, ge=1, le=256, description=MAX_BATCH_HELP)
    max_batch_wait_ms: float = Field(1.5, ge=0.0, le=100.0, description="how long a batch waits to fill")
    upload_share: float = Field(
        0.25,
        ge=0.0,
        lt=1.0,
        description="share of the backend's windows reserved for uploads while they wait (streams go "
        "first otherwise); 0 = streams always first, which starves uploads when streams saturate the backend",
    )
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
    max_json_mb: float = Field(
        8.0,
        gt=0,
        description="largest JSON answer of POST /v1/segment, MiB (its RLE masks, mostly); a longer one "
        "gets 413 answer_too_large, pointing to output=npz",
    )
    stream_queue: int = Field(
        32, ge=1, description="frames one stream may have in flight before 'overloaded'"
    )
    stream_summary_frames: int = Field(1500, ge=1, description="latest frames the stream summary covers")
    max_streams_per_client: int = Field(
        8,
        ge=1,
        description="streams one caller may hold open: per API key, per client certificate, or per client "
        "address when the caller is anonymous",
    )

    # -- connections (each client's share of the event loop) ---------------------------------
    max_connections: int = Field(
        512,
        ge=1,
        description="open HTTP/WebSocket connections; at the cap, the oldest connection that has not "
        "sent a complete request head is closed to make room, else the new one is",
    )
    max_head_kb: float = Field(
        64.0, gt=0, description="largest request head (request line, URL and headers), KiB; more gets 431"
    )
    max_headers: int = Field(100, ge=1, description="most header lines in a request; more gets 431")
    head_timeout_s: float = Field(
        10.0, gt=0, description="longest a connection may take to send a complete request head (408)"
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="an idle keep-alive connection is closed after this long"
    )

    # -- real clips: region and quality -------------------------------------------------------
    region_frames: int = Field(
        DETECT_FRAMES,
        ge=1,
        le=16,  # an upload detects from its first decoded chunk (16 frames)
        description="at most this many first frames the ultrasound region is chosen from (uploads, and "
        "streams without a region in start): those the first window needs (lookahead + 1), so that "
        "uploads and streams reach the same region",
    )
    region_arbitration: bool = Field(
        True,
        description="where the candidate regions (declared, rescaled, detected, full frame) disagree, "
        "run the first window on each and keep the one where the model finds the LV best",
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
        30.0, gt=0, description="longest a started stream may go without a valid frame"
    )
    stream_min_fps: float = Field(
        1.0,
        ge=0,
        description="useful progress a started stream must make: each valid frame buys 1/stream_min_fps "
        "seconds, banked up to stream_idle_timeout_s; a stream below this rate ends idle_timeout "
        "(0 = only the idle timeout)",
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
    ssl_max_client_chain_kb: float = Field(
        32.0,
        gt=0,
        le=1024,
        description="largest client certificate chain a TLS client may send, KiB (OpenSSL's max_cert_list; "
        "its default is 100): a larger one is refused before it is parsed or verified",
    )
    ssl_client_denylist: str = Field(
        "",
        description="file of revoked client certificates, one SHA-256 fingerprint of the certificate a "
        "line ('#' comments); re-read when it changes or on SIGHUP, open streams of a listed one closed",
    )
    client_cert_scopes: str = Field(
        "segment,stream", description="scopes a verified client certificate holds, comma-separated"
    )
    audit_log: str = Field(
        "",
        description="file of the audit trail (one JSON line per request and stream); empty = the "
        "'echoseg.audit' logger (stderr with the other logs)",
    )
    audit_on_failure: Literal["refuse", "not_ready"] = Field(
        "refuse",
        description="when the audit_log file cannot be written: refuse = API requests and new streams get "
        "503 not_ready and /readyz is 503; not_ready = only /readyz turns 503 (lines are lost meanwhile)",
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
        if self.ssl_client_denylist and self.ssl_client_cert == "none":
            raise ValueError("ssl_client_denylist needs ssl_client_cert=optional or required")
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
    def max_head_bytes(self) -> int:
        return int(self.max_head_kb * 1024)

    @property
    def max_decoded_bytes(self) -> int:
        return int(self.max_decoded_mb * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1024 * 1024)

    @property
    def intra_op_threads(self) -> int:
        return self.threads or available_cpus()

    @property
    def max_batch_wait_s(self) -> float:
        return self.max_batch_wait_ms / 1000.0

    @property
    def budget_s(self) -> float:
        return self.budget_ms / 1000.0
