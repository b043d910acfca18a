"""``echoseg serve`` as a real process: the CLI clients against it, and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from websockets.asyncio.client import connect

from echoseg.cli import main as echoseg_main
from echoseg.presets import get_preset
from training.model import build_model

from .conftest import free_port, moving_disc_clip

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    from export.onnx import export_onnx

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(build_model(get_preset("tiny")).eval(), path, calibration="matmul", batch="dynamic")


@pytest.fixture
def served(onnx_model, tmp_path):
    port = free_port()
    env = {**os.environ, "ECHOSEG_DRAIN_TIMEOUT_S": "2", "ECHOSEG_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "echoseg.cli", "serve", "--model", str(onnx_model), "--port", str(port)]
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((tmp_path / "server.log").read_text())
        time.sleep(0.2)
    yield proc, url
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    log.close()


def test_cli_clients_against_a_served_onnx_model(served, tmp_path, capsys):
    _, url = served
    clip = tmp_path / "clip.npy"
    np.save(clip, moving_disc_clip(30, 64, 48))
    assert echoseg_main(["stream", str(clip), "--url", url, "--fps", "50", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "received 30 masks, indices complete and in order: True" in out and "p99" in out
    assert np.load(tmp_path / "clip.masks.npz")["masks"].shape == (30, 64, 48)
    assert echoseg_main(["segment", str(clip), "--url", url, "--out", str(tmp_path), "--output", "npz"]) == 0
    assert np.load(tmp_path / "clip.npz")["masks"].shape == (30, 64, 48)
    # a client-given region and per-mask flags (mask_format 2)
    argv = ["stream", str(clip), "--url", url, "--fps", "0", "--region", "2,3,46,60", "--flags"]
    assert echoseg_main(argv) == 0
    out = capsys.readouterr().out
    assert "received 30 masks" in out and "flags: " in out and "region (client): x 2-46, y 3-60" in out
    assert echoseg_main(["stream", str(clip), "--url", url, "--region", "2,3,46"]) == 2
    assert "expected x0,y0,x1,y1 (4 integers), got 3 values" in capsys.readouterr().out


def test_sigterm_drains_then_closes_streams_with_1001(served):
    proc, url = served

    async def main():
        async with connect(url.replace("http", "ws") + "/v1/stream") as ws:
            await ws.send(json.dumps({"type": "start", "width": 8, "height": 8}))
            await ws.recv()
            await ws.send(bytes(64))
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            ready = await asyncio.to_thread(httpx.get, f"{url}/readyz")
            started = time.monotonic()
            messages = []
            try:
                async for m in ws:
                    messages.append(m)
            except Exception:
                pass
            return ready.status_code, messages, ws.close_code, time.monotonic() - started

    status, messages, code, waited = asyncio.run(main())
    assert status == 503, "not ready while draining"
    assert code == 1001 and json.loads(messages[-1])["code"] == "shutting_down"
    assert waited > 0.5, "the stream was given the drain timeout before being closed"
    assert proc.wait(30) == 0
