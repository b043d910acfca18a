"""An ONNX Runtime deployment never loads torch: the real CLI serves a REST clip and a WebSocket
stream in a process where importing torch fails, and every attempt to import it is recorded.

The masks are compared with the same export run in this (torch-capable) process through the
runtime layer, so the torch-free server computes what the product computes.
"""

from __future__ import annotations

import asyncio
import io
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest

from echoseg.preprocess import clip_windows, logits_to_masks, preprocess
from echoseg.runtime import create_runtime
from service.client import stream_frames

from .conftest import moving_disc_clip

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

LAUNCHER = textwrap.dedent(
    """
    import sys

    ATTEMPTS = sys.argv.pop(1)


    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name == "training.model.network":
                with open(ATTEMPTS, "a") as f:
                    f.write(name + "\\n")
                raise ImportError(f"{name} is blocked in this test (an ONNX Runtime server must not load it)")
            return None


    sys.meta_path.insert(0, BlockTorch())
    from echoseg.cli import main

    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.fixture
def torch_free_server(exported, tmp_path):
    from echoseg.bench import find_benchmarks

    assert find_benchmarks(), "needs the source checkout's benchmarks/ folder (its server launcher)"
    from benchmarks.common import served

    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    attempts = tmp_path / "torch-imports.txt"
    model = exported("tiny", "matmul")
    env = {"ECHOSEG_THREADS": "1"}
    with served(
        model, env, launcher=[sys.executable, str(launcher), str(attempts)], ready_timeout_s=120
    ) as server:
        yield server.url, model, attempts, server.log_path


def expected_masks(model, frames: np.ndarray) -> np.ndarray:
    runtime = create_runtime("onnxruntime", model, "cpu")
    runtime.load()
    config = runtime.config
    logits = runtime.infer(clip_windows(preprocess(frames, config), config))[:, 0]  # (T, S, S)
    return logits_to_masks(logits, *frames.shape[1:], config)


def test_rest_and_stream_without_torch(torch_free_server):
    url, model, attempts, log_path = torch_free_server
    frames = moving_disc_clip(frames=12, height=40, width=48)
    expected = expected_masks(model, frames)

    buffer = io.BytesIO()
    np.save(buffer, frames)
    response = httpx.post(
        f"{url}/v1/segment?output=npz",
        content=buffer.getvalue(),
        headers={"content-type": "application/x-npy"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    rest = np.load(io.BytesIO(response.content))["masks"]
    np.testing.assert_array_equal(rest, expected)

    report = asyncio.run(stream_frames(frames, url, fps=None))
    assert report.error is None and report.close_code == 1000
    assert report.indices == list(range(len(frames)))
    np.testing.assert_array_equal(np.stack(report.masks), expected)

    info = httpx.get(f"{url}/v1/models", timeout=5).json()["models"][0]
    assert info["backend"] == "onnxruntime"
    assert not attempts.exists(), f"the server tried to import: {attempts.read_text()}"
    assert "Traceback" not in log_path.read_text()
