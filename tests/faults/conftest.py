"""Fixtures of the fault suite: servers under attack, in-process (uvicorn thread) or as ``echoseg serve``.

Every test here talks to a real uvicorn server on 127.0.0.1 with real clients (httpx,
websockets, or a raw socket where a client must misbehave below HTTP). Every loop is bounded in
count and in time. Heavier variants (full-size clips, minutes of traffic) live in
``benchmarks/faults.py`` and ``benchmarks/soak.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from echoseg.bench import find_benchmarks

assert find_benchmarks(), "tests/faults needs the source checkout's benchmarks/ folder"

from benchmarks.hostile import Served, serve_process  # noqa: E402
from tests.service.conftest import LiveServer, fake_backend, make_server  # noqa: E402, F401


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    from benchmarks.common import export_preset

    return export_preset("tiny", tmp_path_factory.mktemp("faults-model"))


@pytest.fixture
def served(tiny_onnx, tmp_path):
    """``served(**env)`` -> a started ``echoseg serve`` process (:class:`Served`), killed at teardown."""
    stack = []

    def start(**env: str) -> Served:
        cm = serve_process(tiny_onnx, tmp_path / f"server{len(stack)}.log", env)
        stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def fake(make_server):  # noqa: F811
    """``fake(**settings)`` -> an in-process server with the fake backend."""

    def start(**settings) -> LiveServer:
        return make_server(fake_backend(), max_batch=8, **settings)

    return start
