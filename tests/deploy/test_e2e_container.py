"""The CPU image, built and run: started as deploy/compose.yaml starts it, it serves the same masks
as the host's `echoseg serve` and drains on SIGTERM.

The image is built by deploy/build-local.sh (podman; a Debian base made with mmdebstrap where no
registry is reachable). The container gets the Compose service's hardening (user, read-only root,
tmpfs /tmp, a cache volume, dropped capabilities, no-new-privileges), its environment and its stop
grace period, and publishes its port on 127.0.0.1 only. The host server serves the ONNX file
copied out of the image, with the same ONNX Runtime, so the masks must be identical. Every wait is
bounded; nothing here asserts on a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from websockets.sync.client import connect

from service.client import stream_frames

# The first test builds the image (deploy/build-local.sh): minutes from nothing, seconds when cached.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
FRAMES = 24
HEIGHT, WIDTH = 80, 96
WAIT_S = 120.0


def clip(frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A bright disc that grows and shrinks on speckle: (T, H, W) uint8."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    out = np.empty((frames, height, width), np.uint8)
    for t in range(frames):
        radius = min(height, width) * (0.2 + 0.08 * math.sin(2 * math.pi * t / 12))
        disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < radius**2
        out[t] = np.clip(rng.normal(40, 10, (height, width)) + 150 * disc, 0, 255).astype(np.uint8)
    return out


def compose_service() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["echoseg"]


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * (60 if duration.endswith("m") else 1)


def run_args(service: dict, name: str, port: int, volume: str) -> list[str]:
    """`podman run` arguments equivalent to the Compose service (port on 127.0.0.1 only)."""
    args = ["run", "-d", "--name", name, "--publish", f"127.0.0.1:{port}:8000", "--user", service["user"]]
    if service.get("read_only"):
        # podman adds writable tmpfs on /tmp, /var/tmp and /run to a read-only root unless told not
        # to; Docker does not. Only the Compose file's own tmpfs mounts are writable here.
        args += ["--read-only", "--read-only-tmpfs=false"]
    for tmpfs in service.get("tmpfs", []):
        args += ["--tmpfs", tmpfs]
    for cap in service.get("cap_drop", []):
        args += ["--cap-drop", cap]
    for opt in service.get("security_opt", []):
        args += ["--security-opt", opt]
    cache = service["environment"]["ECHOSEG_CACHE_DIR"]
    args += ["--volume", f"{volume}:{cache}", "--stop-timeout", str(_seconds(service["stop_grace_period"]))]
    # podman schedules health checks with systemd timers, and these machines run no systemd: the
    # image's check is run once by hand instead (`podman healthcheck run`).
    args += ["--health-interval", "disable"]
    for key, value in service["environment"].items():
        value = "" if str(value).startswith("${") else str(value)  # ${ECHOSEG_API_KEYS:-} -> no keys
        args += ["--env", f"{key}={value}"]
    return args


def segment(base: str, frames: np.ndarray) -> tuple[np.ndarray, dict]:
    """REST: the clip as .npy -> (masks (T, H, W) from ``?output=npz``, the JSON answer)."""
    buffer = io.BytesIO()
    np.save(buffer, frames)
    body = buffer.getvalue()
    headers = {"content-type": "application/x-npy"}
    npz = httpx.post(f"{base}/v1/segment?output=npz", content=body, headers=headers, timeout=120)
    assert npz.status_code == 200, npz.text
    answer = httpx.post(f"{base}/v1/segment", content=body, headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text
    return np.load(io.BytesIO(npz.content))["masks"], answer.json()


def stream(base: str, frames: np.ndarray) -> np.ndarray:
    """WebSocket: the clip in lockstep through the project's client -> masks (T, H, W)."""
    report = asyncio.run(stream_frames(frames, base, fps=None))
    assert report.error is None and report.close_code == 1000, (report.error, report.close_code)
    assert report.indices == list(range(len(frames)))
    return np.stack(report.masks)


def wait_ready(base: str, alive, logs, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            pytest.fail(f"the container exited before {base}/readyz answered:\n{logs()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"{base}/readyz did not answer 200 within {timeout:.0f} s:\n{logs()[-4000:]}")


class Container:
    def __init__(self, podman: str, name: str, port: int) -> None:
        self.podman, self.name, self.base = podman, name, f"http://127.0.0.1:{port}"

    def podman_out(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([self.podman, *args], capture_output=True, text=True, timeout=timeout)

    def state(self, field: str) -> str:
        return self.podman_out("inspect", "--format", f"{{{{.State.{field}}}}}", self.name).stdout.strip()

    def alive(self) -> bool:
        return self.state("Running") == "true"

    def logs(self) -> str:
        proc = self.podman_out("logs", self.name)
        return proc.stdout + proc.stderr

    def exec(self, *cmd: str) -> subprocess.CompletedProcess:
        return self.podman_out("exec", self.name, *cmd)


@pytest.fixture(scope="module")
def container(podman, echoseg_image, helpers):
    name = f"echoseg-e2e-{os.getpid()}"
    volume = f"{name}-cache"
    port = helpers.free_port()
    helpers.run([podman, *run_args(compose_service(), name, port, volume), echoseg_image], timeout=120)
    box = Container(podman, name, port)
    try:
        wait_ready(box.base, box.alive, box.logs)
        yield box
    finally:
        subprocess.run([podman, "rm", "-f", "-t", "0", name], capture_output=True, timeout=120)
        subprocess.run([podman, "volume", "rm", "-f", volume], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def host_server(container, helpers, tmp_path_factory):
    """`echoseg serve` on the host (this venv) serving the ONNX file copied out of the image."""
    tmp = tmp_path_factory.mktemp("host")
    model = tmp / "default.onnx"
    helpers.run([container.podman, "cp", f"{container.name}:/models/default.onnx", str(model)])
    port = helpers.free_port()
    log = tmp / "server.log"
    env = dict(os.environ, ECHOSEG_CACHE_DIR=str(tmp / "cache"), ECHOSEG_API_KEYS="")
    cmd = [
        sys.executable, "-m", "echoseg.cli", "serve", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--backend", "onnxruntime", "--device", "cpu",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        helpers.wait_http_ok(f"{base}/readyz", proc, log)
        yield base
    finally:
        helpers.stop_process(proc)


def test_runs_hardened_without_torch(container):
    assert container.exec("id", "-u").stdout.strip() == "10001"
    denied = container.exec("sh", "-c", "touch /models/x")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert container.exec("sh", "-c", "touch /tmp/x /var/cache/echoseg/x").returncode == 0
    probe = container.exec("python", "-c", "import importlib.util as u; print(u.find_spec('torch') is None)")
    assert probe.stdout.strip() == "True", f"torch is installed in the image: {probe.stdout}{probe.stderr}"
    info = httpx.get(f"{container.base}/v1/models", timeout=5).json()["models"][0]
    assert info["backend"] == "onnxruntime"
    health = container.podman_out("healthcheck", "run", container.name)
    assert health.returncode == 0, health.stdout + health.stderr


def test_same_masks_as_the_host(container, host_server, record_property):
    frames = clip()
    masks, answer = segment(container.base, frames)
    host_masks, host_answer = segment(host_server, frames)
    assert masks.shape == frames.shape and masks.any(), "the model finds the disc"
    np.testing.assert_array_equal(masks, host_masks)
    assert answer["model"] == host_answer["model"] and answer["model"]["backend"] == "onnxruntime"
    assert answer["area"] == host_answer["area"]
    assert answer["masks"]["counts"] == host_answer["masks"]["counts"]

    streamed = stream(container.base, frames)
    np.testing.assert_array_equal(streamed, stream(host_server, frames))
    np.testing.assert_array_equal(streamed, masks)
    record_property("mask_pixels", int(masks.sum()))
    print(f"\nREST and WebSocket masks, {FRAMES} frames: container == host ({int(masks.sum())} px set)")


def test_drains_on_sigterm(container, helpers):
    """`podman stop` sends SIGTERM: /readyz turns 503, the open stream still gets every mask and its
    summary, and the process exits 0 by itself (not killed at the stop timeout)."""
    frames = clip()
    half = FRAMES // 2
    url = container.base.replace("http://", "ws://") + "/v1/stream"
    stopper: dict[str, subprocess.CompletedProcess] = {}
    masks = 0
    with connect(url, open_timeout=10, close_timeout=5, max_size=None) as ws:
        start = {"type": "start", "width": WIDTH, "height": HEIGHT}
        ws.send(json.dumps({**start, "encoding": "gray8", "mask_encoding": "gray8"}))
        lookahead = int(json.loads(ws.recv(timeout=30))["lookahead_frames"])

        def send(i: int) -> None:
            nonlocal masks
            ws.send(frames[i].tobytes())
            while masks < i + 1 - lookahead:
                message = ws.recv(timeout=30)
                assert isinstance(message, bytes), message
                masks += 1

        for i in range(half):
            send(i)
        # `podman stop` blocks until the container exits: it runs beside the stream.
        stop = threading.Thread(
            target=lambda: stopper.setdefault(
                "proc", container.podman_out("stop", container.name, timeout=90)
            )
        )
        stop.start()
        poll_until(lambda: readyz(container.base) == 503, what="/readyz 503 while draining")
        for i in range(half, FRAMES):
            send(i)
        ws.send(json.dumps({"type": "end"}))
        while masks < FRAMES:
            assert isinstance(ws.recv(timeout=30), bytes)
            masks += 1
        summary = json.loads(ws.recv(timeout=30))
    assert summary["type"] == "summary" and summary["frames"] == FRAMES, summary
    stop.join(timeout=120)
    assert not stop.is_alive(), "podman stop did not return"
    assert stopper["proc"].returncode == 0, stopper["proc"].stderr
    logs = container.logs()
    assert container.state("ExitCode") == "0", logs[-3000:]
    assert "draining" in logs
    assert "SIGKILL" not in stopper["proc"].stderr


def readyz(base: str) -> int | None:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{base}/readyz", timeout=2.0).status_code
    return None


def poll_until(fn, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} not met within {timeout:.0f} s")
