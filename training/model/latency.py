"""A quick latency probe of a network at batch 1: torch eager and ONNX Runtime on the CPU.

Used by ``echoseg model-info --latency`` to size presets. These are single-machine figures: on a
shared machine compare them as ratios inside one run; the reproducible benchmarks live in
``benchmarks/``.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

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


def onnx_session(model: EchoSegNet, frames: torch.Tensor, threads: int):
    """An ONNX Runtime CPU session of ``model`` (exported in memory, TorchScript-based exporter)."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (frames,), buffer, dynamo=False, input_names=["frames"], output_names=["logits"]
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def measure_latency(model: EchoSegNet, threads: int = 2, runs: int = 20) -> dict[str, dict[str, float]]:
    """Batch-1 latency per output frame of both calibration forms, in torch and ONNX Runtime."""
    c = model.config
    frames = torch.randn(1, c.num_frames * c.in_channels, c.input_size, c.input_size)
    previous_threads, previous_form = torch.get_num_threads(), c.calibration
    torch.set_num_threads(threads)
    feed = {"frames": frames.numpy()}
    model.eval()
    results = {}
    try:
        for form in ("conv", "matmul"):
            model.set_calibration(form)
            with torch.no_grad():
                results[f"torch_{form}"] = time_call(lambda: model(frames), runs)
            session = onnx_session(model, frames, threads)
            results[f"onnxruntime_{form}"] = time_call(lambda s=session: s.run(None, feed), runs)
    finally:
        torch.set_num_threads(previous_threads)
        model.set_calibration(previous_form)
    return results
