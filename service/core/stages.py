"""Per-stage timings of the streaming path, for the stage benchmark (``benchmarks.stages``).

The service takes an optional :class:`StageHook` (``create_app(..., stage_hook=...)``); when one
is given, each stream reports to it, by name:

- ``arrivals``: ``time.perf_counter()`` when each binary frame message reached the session;
- ``decode``, ``resize`` (crop to the region, resize, normalise), ``resize_back`` (sigmoid,
  map back, threshold), ``encode``: how long those steps took, ms; ``region``: the one-off
  detection of a stream's ultrasound region from its first frames, ms;
- ``queue_wait``, ``inference``, ``batch``: each frame's wait in the micro-batcher, the backend
  time of its batch (ms), and the batch size;
- ``sends``: ``[frame index, start, end]`` (perf_counter) of each mask message handed to the socket.

Without a hook (the product) each step is called directly, and nothing is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class StageHook(Protocol):
    def __call__(self, name: str, value: Any) -> None: ...


def timed(hook: StageHook | None, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, its duration reported to ``hook`` as ``name`` (ms) when there is one."""
    if hook is None:
        return fn(*args, **kwargs)
    started = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        hook(name, (time.perf_counter() - started) * 1e3)
