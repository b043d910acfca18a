"""A real Prometheus scraping a real EchoSeg server on loopback while a clip streams over WebSocket.

Prometheus (the Debian binary) scrapes every second with the shipped alert rules loaded; the test
streams a synthetic clip, then reads the p99 frame latency (histogram_quantile) and the
active-streams series back through Prometheus' HTTP API and checks them against the server's own
/metrics. Every wait is bounded.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.deploy.conftest import evaluated_rules

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
FRAMES = 48
SIZE = 64
WAIT_S = 30.0
P99_QUERY = (
    'histogram_quantile(0.99, sum by (le) (rate(echoseg_frame_latency_seconds_bucket{job="echoseg",'
    'transport="ws"}[1m])))'
)


def poll(fn, timeout: float = WAIT_S, what: str = "condition"):
    """Call ``fn`` until it returns something truthy, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what} not met within {timeout:.0f} s (last: {last!r})")


def synthetic_clip(frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """A bright disc that grows and shrinks on speckle: (T, H, W) uint8."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    clip = np.empty((frames, size, size), np.uint8)
    for t in range(frames):
        radius = size * (0.2 + 0.08 * math.sin(2 * math.pi * t / 24))
        disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2
        clip[t] = np.clip(rng.normal(40, 10, (size, size)) + 150 * disc, 0, 255).astype(np.uint8)
    return clip


class PromAPI:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict]:
        resp = httpx.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=5.0)
        body = resp.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        """The single sample's value, or None while there is none (or it is NaN)."""
        result = self.query(expr)
        if len(result) != 1:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value


@pytest.fixture(scope="module")
def prometheus(echoseg_server, prometheus_bin, helpers, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    target = echoseg_server.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "echoseg",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = helpers.free_port()
    log = tmp / "prometheus.log"
    cmd = [
        prometheus_bin,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        helpers.wait_http_ok(f"{base}/-/ready", proc, log, timeout=WAIT_S)
        api = PromAPI(base)
        poll(lambda: api.scalar('up{job="echoseg"}') == 1, what="first successful scrape")
        yield api
    finally:
        helpers.stop_process(proc)


def stream_clip(base_url: str, clip: np.ndarray, on_half) -> dict:
    """Stream ``clip`` in lockstep (a mask is awaited as soon as its look-ahead has arrived); call
    ``on_half()`` with the stream open halfway through. Returns the closing summary."""
    t, h, w = clip.shape
    url = base_url.replace("http://", "ws://") + "/v1/stream"
    masks = []
    with connect(url, open_timeout=10, close_timeout=5, max_size=None) as ws:
        start = {"type": "start", "width": w, "height": h, "encoding": "gray8", "mask_encoding": "gray8"}
        ws.send(json.dumps(start))
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "ready", ready
        lookahead = int(ready["lookahead_frames"])

        def receive_mask() -> None:
            message = ws.recv(timeout=10)
            assert isinstance(message, bytes), f"expected a mask, got {message!r}"
            index = int.from_bytes(message[:4], "little")
            assert index == len(masks), f"mask {index} arrived out of order"
            assert len(message) == 4 + h * w, "gray8 mask at the client's resolution"
            masks.append(np.frombuffer(message[4:], np.uint8).reshape(h, w))

        for i in range(t):
            ws.send(clip[i].tobytes())
            while len(masks) < i + 1 - lookahead:
                receive_mask()
            if i == t // 2:
                on_half()
        ws.send(json.dumps({"type": "end"}))
        while len(masks) < t:
            receive_mask()
        summary = json.loads(ws.recv(timeout=10))
    assert len(masks) == t
    return summary


def _ws_histogram(metrics_text: str) -> tuple[list[tuple[float, float]], float]:
    """The server's own ws frame-latency buckets [(le, cumulative count)] and total count."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "echoseg_frame_latency_seconds":
            ws = [s for s in family.samples if s.labels.get("transport") == "ws"]
            buckets = sorted((float(s.labels["le"]), s.value) for s in ws if s.name.endswith("_bucket"))
            (count,) = [s.value for s in ws if s.name.endswith("_count")]
            return buckets, count
    raise AssertionError("echoseg_frame_latency_seconds not exported")


def test_prometheus_reads_latency_and_streams(echoseg_server, prometheus, record_property):
    api = prometheus
    seen_open = {}

    def while_open() -> None:
        seen_open["streams"] = poll(
            lambda: api.scalar('sum(echoseg_active_streams{job="echoseg"})') == 1 and 1.0,
            what="Prometheus sees the open stream",
        )

    summary = stream_clip(echoseg_server, synthetic_clip(), while_open)
    assert summary.get("type") == "summary", summary
    assert seen_open["streams"] == 1.0

    # Prometheus has every streamed frame, and the stream is gone again.
    ws_count = 'sum(echoseg_frame_latency_seconds_count{job="echoseg",transport="ws"})'
    poll(lambda: api.scalar(ws_count) == FRAMES, what=f"{FRAMES} ws frames counted in Prometheus")
    poll(lambda: api.scalar('sum(echoseg_active_streams{job="echoseg"})') == 0, what="stream closed")
    peak = api.scalar('max_over_time(echoseg_active_streams{job="echoseg"}[2m])')
    assert peak == 1.0

    p99 = poll(lambda: api.scalar(P99_QUERY), what="a p99 frame latency from histogram_quantile")
    # It is the server's own histogram: p99 lies inside the bucket holding the 99th percentile.
    buckets, count = _ws_histogram(httpx.get(f"{echoseg_server}/metrics", timeout=5).text)
    assert count == FRAMES
    upper_index = next(i for i, (_, cum) in enumerate(buckets) if cum >= 0.99 * count)
    lower = buckets[upper_index - 1][0] if upper_index else 0.0
    upper = buckets[upper_index][0]
    assert lower - 1e-9 <= p99 <= upper + 1e-9, (p99, lower, upper)
    assert 0 < p99 < math.inf

    # The shipped rules loaded and evaluate against the live series.
    rules = evaluated_rules(api.base)
    shipped = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for g in shipped for r in g["rules"])
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]

    record_property("p99_frame_latency_s", p99)
    record_property("p99_bucket", [lower, upper])
    record_property("active_streams_while_open", seen_open["streams"])
    print(f"\nPromQL {P99_QUERY} = {p99:.6f} s (bucket ({lower}, {upper}]); active streams while open = 1")
