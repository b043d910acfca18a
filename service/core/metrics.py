"""Prometheus metrics of the service: every name and label set lives here (see docs/architecture.md).

Each app instance gets its own :class:`CollectorRegistry`, so several apps (tests, benchmarks)
can live in one process. Labels are low-cardinality only: no stream, request or client ids.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# No ``*_created`` series: prometheus_client adds one per counter and histogram child (a Unix
# timestamp, in the text format a gauge-like sample named e.g. ``echoseg_frames_created``) which
# reads like a count and which Prometheus does not need (it detects counter resets itself). The
# switch is the client library's, process-wide and read when a registry is collected; the
# service's process exports only these metrics.
disable_created_metrics()

# 1 ms .. 100 ms resolved finely (the 32 ms budget is an edge), a few coarse buckets beyond.
LATENCY_BUCKETS = (
    0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.032,
    0.04, 0.05, 0.065, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


class Metrics:
    """The service's metric families, registered in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frame_latency = Histogram(
            "echoseg_frame_latency_seconds",
            "From arrival of the last frame a mask needs to the mask leaving the server",
            ["transport"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "echoseg_inference_seconds",
            "Backend time per batch",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "echoseg_queue_wait_seconds",
            "Time a request waits in the micro-batcher before its batch runs",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "echoseg_batch_size", "Windows per backend call", buckets=BATCH_BUCKETS, registry=r
        )
        self.frames = Counter("echoseg_frames_total", "Frames by outcome", ["outcome"], registry=r)
        self.budget_misses = Counter(
            "echoseg_budget_misses_total",
            "Frames whose latency exceeded the budget",
            ["transport"],
            registry=r,
        )
        self.flagged = Counter(
            "echoseg_frames_flagged_total",
            "Frames whose mask came with a flag: no_lv (nothing found) or low_confidence",
            ["transport", "flag"],
            registry=r,
        )
        self.errors = Counter(
            "echoseg_errors_total", "Errors returned to clients by code", ["code"], registry=r
        )
        self.http_requests = Counter(
            "echoseg_http_requests_total",
            "HTTP requests by route template and status",
            ["route", "status"],
            registry=r,
        )
        self.active_streams = Gauge("echoseg_active_streams", "Open WebSocket streams", registry=r)
        self.ready = Gauge("echoseg_ready", "1 when the model is loaded, warmed and not draining", registry=r)
        self.model_info = Gauge(
            "echoseg_model_info", "The served model (value 1)", ["model_id", "preset", "backend"], registry=r
        )
        for outcome in ("ok", "error", "dropped"):
            self.frames.labels(outcome)
        # Every labelled series exists from the start at zero. A series born with its first frame
        # would reach Prometheus already holding that frame, and rate()/increase() never count a
        # series' first sample: the first (slowest, warm-up) frames would be missing from every
        # latency quantile an operator reads.
        for transport in ("ws", "rest"):
            self.frame_latency.labels(transport)
            self.budget_misses.labels(transport)
            for flag in ("low_confidence", "no_lv"):
                self.flagged.labels(transport, flag)

    def observe_frame(self, transport: str, seconds: float, budget_s: float) -> None:
        self.frame_latency.labels(transport).observe(seconds)
        self.frames.labels("ok").inc()
        if seconds > budget_s:
            self.budget_misses.labels(transport).inc()

    def observe_flag(self, transport: str, flag: str) -> None:
        if flag != "ok":
            self.flagged.labels(transport, flag).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
