"""Fixtures of the service tests: a fake backend, a real uvicorn server on a free port, clips."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from echoseg.config import ModelConfig
from service.backends import Backend
from service.core.config import Settings
from service.main import create_app
from service.server import uvicorn_config


class FakeBackend(Backend):
    """Thresholds the window's target frame: bright pixels are 'LV'. Optional per-batch delay.

    Enough to test the service's own logic (batching, windows, protocol, errors) without a network.
    """

    name = "fake"

    def __init__(self, delay_s: float = 0.0, window: str = "centered", num_frames: int = 3) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.window = window
        self.num_frames = num_frames
        self.batches: list[int] = []

    def load(self) -> None:
        self.config = ModelConfig(
            preset="fake", num_frames=self.num_frames, window=self.window, width=2, depth=3,
            calibrated_levels=(), input_size=32, mean=0.5, std=0.25,
        )  # fmt: skip
        self.model_id = "fake-0"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.shape[0])
        if self.delay_s:
            time.sleep(self.delay_s)
        target = self.config.offsets.index(0)
        return (
            4.0 * batch[:, target : target + 1]
        )  # (B, k, S, S) -> (B, 1, S, S); >0 where brighter than mean


def fake_backend(**kwargs) -> FakeBackend:
    backend = FakeBackend(**kwargs)
    backend.load()
    return backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real uvicorn server in a thread; ``url`` is its http://127.0.0.1:port."""

    def __init__(self, app) -> None:
        self.app = app
        self.service = app.state.service
        self.port = free_port()
        if self.service.tls is not None:  # the product's own config: live TLS context, peer certificates
            self.url = f"https://127.0.0.1:{self.port}"
            config = uvicorn_config(app, self.service.settings, "127.0.0.1", self.port, self.service.tls)
        else:
            self.url = f"http://127.0.0.1:{self.port}"
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def call(self, coro, timeout: float = 30.0):
        """Run ``coro`` on the server's event loop (e.g. the drain) and return its result."""
        loop = self._loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def _loop(self) -> asyncio.AbstractEventLoop:
        servers = self.server.servers
        return servers[0].get_loop()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Scrape ``/metrics``: ``{(sample name, sorted label items): value}``."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest.fixture
def make_server() -> Iterator[Callable[..., LiveServer]]:
    """``make_server(backend_instance or None, **settings)`` -> a started :class:`LiveServer`."""
    started: list[LiveServer] = []

    def make(instance: Backend | None = None, **settings) -> LiveServer:
        settings.setdefault("model", "unused")
        app = create_app(Settings(**settings), backend=instance)
        server = LiveServer(app).__enter__()
        started.append(server)
        return server

    yield make
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def fake_server(make_server) -> LiveServer:
    return make_server(fake_backend(), max_batch=8)


def moving_disc_clip(frames: int = 24, height: int = 48, width: int = 40, seed: int = 0) -> np.ndarray:
    """``(T, H, W)`` uint8: a bright disc whose radius beats, on a noisy dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    out = np.empty((frames, height, width), np.uint8)
    for t in range(frames):
        r = min(height, width) * (0.2 + 0.1 * np.sin(2 * np.pi * t / 12))
        disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < r**2
        out[t] = np.clip(30 + 180 * disc + rng.normal(0, 10, (height, width)), 0, 255).astype(np.uint8)
    return out


@pytest.fixture
def clip() -> np.ndarray:
    return moving_disc_clip()
