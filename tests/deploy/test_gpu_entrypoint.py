"""The GPU image's entry point: builds the TensorRT engine once per checkpoint and GPU, then serves it.

`echoseg` and `nvidia-smi` are stand-ins on PATH that record how they were called, so the script's
own logic (cache key, build once, hand the engine to `echoseg serve`) runs for real without a GPU.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "gpu-entrypoint.sh"

FAKE_ECHOSEG = """#!/bin/sh
echo "$* | ECHOSEG_MODEL=$ECHOSEG_MODEL" >> "$CALLS"
if [ "$1" = export ]; then
    while [ $# -gt 0 ]; do
        if [ "$1" = --out ]; then echo built > "$2"; fi
        shift
    done
fi
"""
FAKE_NVIDIA_SMI = """#!/bin/sh
echo "$GPU_NAME, 550.54"
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def sandbox(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "echoseg", FAKE_ECHOSEG)
    _executable(bin_dir / "nvidia-smi", FAKE_NVIDIA_SMI)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model": {"preset": "lite"}}')
    (model / "student.safetensors").write_bytes(b"weights")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALLS": str(tmp_path / "calls.log"),
        "GPU_NAME": "NVIDIA H100",
        "ECHOSEG_MODEL": str(model),
        "ECHOSEG_CACHE_DIR": str(tmp_path / "cache"),
        "ECHOSEG_MAX_BATCH": "32",
    }
    return tmp_path, env


def _start(env: dict, tmp_path: Path) -> list[str]:
    calls = Path(env["CALLS"])
    calls.unlink(missing_ok=True)
    args = ["sh", str(SCRIPT), "--host", "0.0.0.0", "--port", "8000"]
    subprocess.run(args, env=env, check=True, timeout=30, cwd=tmp_path)
    return calls.read_text().splitlines()


def test_builds_once_then_serves_the_engine(sandbox):
    tmp_path, env = sandbox
    first = _start(env, tmp_path)
    assert [c.split()[:2] for c in first] == [["export", "onnx"], ["export", "tensorrt"], ["serve", "--host"]]
    assert f"--checkpoint {env['ECHOSEG_MODEL']}" in first[0]
    assert "--fp16" in first[1] and "--max-batch 32" in first[1]
    engine = first[2].split("ECHOSEG_MODEL=")[1]
    assert engine.endswith("/model.plan") and Path(engine).read_text() == "built\n"
    assert engine.startswith(env["ECHOSEG_CACHE_DIR"])
    assert first[2].startswith("serve --host 0.0.0.0 --port 8000")
    # A restart finds the engine and only serves.
    second = _start(env, tmp_path)
    assert second == [first[2]]


def test_another_gpu_gets_its_own_engine(sandbox):
    tmp_path, env = sandbox
    first = _start(env, tmp_path)[-1].split("ECHOSEG_MODEL=")[1]
    other = _start(dict(env, GPU_NAME="NVIDIA L4"), tmp_path)
    assert [c.split()[:2] for c in other][:2] == [["export", "onnx"], ["export", "tensorrt"]]
    assert other[-1].split("ECHOSEG_MODEL=")[1] != first


def test_an_engine_is_served_as_given(sandbox):
    tmp_path, env = sandbox
    calls = _start(dict(env, ECHOSEG_MODEL="/models/mine.plan"), tmp_path)
    assert calls == ["serve --host 0.0.0.0 --port 8000 | ECHOSEG_MODEL=/models/mine.plan"]


def test_shellcheck(helpers):
    shellcheck = helpers.require_tool("shellcheck", "Debian package shellcheck")
    helpers.run([shellcheck, "--shell=sh", str(SCRIPT)])
