"""A quick latency probe of a network at batch 1: torch eager and ONNX Runtime on the CPU.

Used by ``echoseg model-info --latency`` (:mod:`export.model_info`) to size presets. Both run
through the runtime layer (:mod:`echoseg.runtime`), the code the service serves with; the ONNX
file is a temporary export made with the product's exporter (:mod:`export.onnx`), which is why
this lives beside the exporter and not in ``training``. These are single-machine figures: on a
shared machine compare them as ratios inside one run; the reproducible benchmarks live in
``benchmarks/``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from echoseg.preprocess import random_windows
from echoseg.runtime.onnxruntime import OnnxRuntime
from echoseg.runtime.torch import TorchRuntime
from export.onnx import export_onnx
from training.model.network import EchoSegNet


def time_call(fn: Callable[[], object], runs: int, warmup: int = 2) -> dict[str, float]:
    """Median and minimum wall time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 2), "min_ms": round(float(ms.min()), 2)}


def measure_latency(model: EchoSegNet, threads: int = 2, runs: int = 20) -> dict[str, dict[str, float]]:
    """Batch-1 latency per output frame of both calibration forms, in torch and ONNX Runtime."""
    import torch

    windows = random_windows(model.config, 1)
    previous_threads = torch.get_num_threads()
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for form in ("conv", "matmul"):
                with TorchRuntime(model, "cpu", threads, calibration=form) as runtime:
                    runtime.load()
                    results[f"torch_{form}"] = time_call(lambda r=runtime: r.infer(windows), runs)
                batch = 1 if form == "conv" else "dynamic"
                path = export_onnx(model, Path(tmp) / f"{form}.onnx", calibration=form, batch=batch)
                with OnnxRuntime(path, "cpu", threads) as runtime:
                    runtime.load()
                    results[f"onnxruntime_{form}"] = time_call(lambda r=runtime: r.infer(windows), runs)
    finally:
        torch.set_num_threads(previous_threads)
    return results
