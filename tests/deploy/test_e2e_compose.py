"""The Compose stack (deploy/compose.yaml) up under podman-compose: Prometheus scrapes the EchoSeg
container by its service name, and a PromQL query reads a streamed clip's frames back.

What this machine cannot run is adapted, in the test, on a copy of the Compose file: ports are
published on 127.0.0.1 at free ports; the image is the one deploy/build-local.sh built (no
`build:`); where the `prom/prometheus` image cannot be pulled, the Prometheus service runs the
host's Debian `prometheus` binary in the local Debian base image, with the Compose file's own
command, config and rules mounts; Grafana's image cannot be pulled and is left out (its
provisioning is checked statically in test_grafana.py). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from service.client import stream_frames
from tests.deploy.conftest import evaluated_rules

# The first test builds the image (deploy/build-local.sh): minutes from nothing, seconds when cached.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(2400)]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
LOCAL_BASE = "localhost/echoseg-base:bookworm"
FRAMES = 30
WAIT_S = 120.0


def poll(fn, timeout: float = WAIT_S, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            last = fn()
            if last:
                return last
        time.sleep(1.0)
    pytest.fail(f"{what} not met within {timeout:.0f} s (last: {last!r})")


def promql(base: str, expr: str) -> float | None:
    body = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5.0).json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    if len(result) != 1:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def image_available(podman: str, image: str) -> bool:
    if subprocess.run([podman, "image", "exists", image], capture_output=True).returncode == 0:
        return True
    return subprocess.run([podman, "pull", "-q", image], capture_output=True, timeout=60).returncode == 0


def local_stack(podman: str, image: str, echoseg_port: int, prometheus_port: int) -> dict:
    """deploy/compose.yaml adapted to this machine (see the module docstring)."""
    stack = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = stack["services"]
    services.pop("grafana")
    stack["volumes"].pop("grafana-data")

    echoseg = services["echoseg"]
    echoseg.pop("build")
    echoseg["image"] = image
    echoseg["ports"] = [f"127.0.0.1:{echoseg_port}:8000"]

    prometheus = services["prometheus"]
    prometheus["ports"] = [f"127.0.0.1:{prometheus_port}:9090"]
    volumes = []
    for volume in prometheus["volumes"]:
        source, rest = volume.split(":", 1)
        volumes.append(f"{(DEPLOY / source).resolve()}:{rest}" if source.startswith(".") else volume)
    if not image_available(podman, prometheus["image"]):
        prometheus["image"] = LOCAL_BASE
        prometheus["entrypoint"] = ["/bin/prometheus"]
        volumes.append("/usr/bin/prometheus:/bin/prometheus:ro")
    prometheus["volumes"] = volumes
    # The restart policy would bring a failed service back behind the test's back.
    for service in services.values():
        service.pop("restart", None)
    return stack


@pytest.fixture(scope="module")
def stack(podman, echoseg_image, helpers, tmp_path_factory):
    compose = helpers.require_tool("podman-compose", "Debian package podman-compose")
    if not Path("/usr/bin/prometheus").exists():
        helpers.require_tool("prometheus", "Debian package prometheus")
    tmp = tmp_path_factory.mktemp("compose")
    ports = {"echoseg": helpers.free_port(), "prometheus": helpers.free_port()}
    (tmp / "compose.yaml").write_text(
        yaml.safe_dump(local_stack(podman, echoseg_image, ports["echoseg"], ports["prometheus"]))
    )
    project = f"echoseg-e2e-{os.getpid()}"
    base = [compose, "-p", project, "-f", str(tmp / "compose.yaml")]
    log = tmp / "compose.log"
    # The Compose file's ${ECHOSEG_API_KEYS:-} takes the key from the environment, as an operator sets it.
    api_key = secrets.token_hex(16)
    env = dict(os.environ, ECHOSEG_API_KEYS=api_key)
    with log.open("w") as out:
        up = subprocess.run(
            [*base, "up", "-d"], cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300
        )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    def logs() -> str:
        proc = subprocess.run([*base, "logs"], cwd=tmp, capture_output=True, text=True, timeout=60)
        return log.read_text()[-3000:] + proc.stdout[-4000:] + proc.stderr[-2000:]

    try:
        assert up.returncode == 0, logs()
        for name, path in (("echoseg", "/readyz"), ("prometheus", "/-/ready")):
            url = urls[name] + path
            poll(lambda url=url: httpx.get(url, timeout=2).status_code == 200, what=f"{url} answers 200")
        yield urls, api_key, logs
    finally:
        subprocess.run([*base, "down", "-v"], cwd=tmp, capture_output=True, timeout=300)
        # `down` leaves the project's network behind.
        subprocess.run([podman, "network", "rm", "-f", f"{project}_default"], capture_output=True, timeout=60)


def test_prometheus_reads_the_streamed_frames(stack, record_property):
    urls, api_key, logs = stack
    prom = urls["prometheus"]
    try:
        poll(lambda: promql(prom, 'up{job="echoseg"}') == 1, what="Prometheus scrapes echoseg:8000")
    except pytest.fail.Exception:
        print(logs())
        raise

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64]
    discs = [(yy - 32) ** 2 + (xx - 32) ** 2 < (12 + t % 5) ** 2 for t in range(FRAMES)]
    frames = np.clip([rng.normal(40, 10, (64, 64)) + 150 * disc for disc in discs], 0, 255).astype(np.uint8)
    denied = asyncio.run(stream_frames(frames[:3], urls["echoseg"], fps=None))
    assert denied.close_code == 1008 and denied.error["code"] == "unauthorized", "the key was not applied"
    report = asyncio.run(stream_frames(frames, urls["echoseg"], fps=None, api_key=api_key))
    assert report.error is None and report.close_code == 1000 and len(report.masks) == FRAMES

    query = 'sum(echoseg_frame_latency_seconds_count{job="echoseg",transport="ws"})'
    seen = poll(lambda: promql(prom, query) == FRAMES and FRAMES, what=f"{FRAMES} ws frames in Prometheus")
    ok = 'sum(echoseg_frames_total{job="echoseg",outcome="ok"})'
    assert poll(lambda: promql(prom, ok), what="frames_total in Prometheus") >= FRAMES
    rules = evaluated_rules(prom)
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    record_property("promql_ws_frames", seen)
    print(f"\nPromQL {query} = {seen} (a {FRAMES}-frame stream through the Compose stack)")
