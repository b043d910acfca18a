"""One implementation per runtime, behind ``load`` / ``infer(batch)`` / ``close``.

- ``onnxruntime`` (:class:`~echoseg.runtime.onnxruntime.OnnxRuntime`): an ``.onnx`` export on
  the CPU, CUDA or TensorRT execution providers;
- ``tensorrt`` (:class:`~echoseg.runtime.tensorrt.TensorRTRuntime`): a serialised engine;
- ``torch`` (:class:`~echoseg.runtime.torch.TorchRuntime`): a checkpoint, eager or CUDA graphs.

The service's micro-batcher, ``echoseg export check``, ``model-info --latency``, the benchmarks
and the GPU check all run models through these classes. Each module imports its library (and
torch) only when a runtime of its kind is created, so an ONNX Runtime deployment never loads
torch.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from echoseg.artifacts import Artifact, resolve
from echoseg.runtime.base import InferenceError, Runtime, RuntimeUnavailable, batch_pieces

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt")

__all__ = [
    "BACKENDS",
    "InferenceError",
    "Runtime",
    "RuntimeUnavailable",
    "batch_pieces",
    "choose_backend",
    "create_runtime",
]


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA GPU (torch is imported only to ask)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def choose_backend(kind: str, requested: str, device: str) -> tuple[str, str]:
    """The runtime to use for an artefact of ``kind`` and the reason, honouring an explicit request.

    ``auto``: an engine runs on TensorRT, an ``.onnx`` on ONNX Runtime; a checkpoint on a CUDA GPU
    runs on torch (fp16 CUDA graphs need no export step), on a CPU on ONNX Runtime (after an
    export, which the caller makes), which runs the network faster than torch eager there.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    if requested != "auto":
        if requested == "torch" and kind != "checkpoint":
            raise ValueError(
                "the torch backend needs a checkpoint directory or .safetensors file, not an exported model"
            )
        if requested == "tensorrt" and kind != "engine":
            raise ValueError(
                "the tensorrt backend needs a TensorRT engine file (.engine/.plan); "
                "build one with echoseg export tensorrt"
            )
        if requested == "onnxruntime" and kind == "engine":
            raise ValueError("a TensorRT engine runs only on the tensorrt backend")
        return requested, "requested"
    if kind == "engine":
        return "tensorrt", "the model is a TensorRT engine"
    if kind == "onnx":
        return "onnxruntime", "the model is an ONNX file"
    if device == "cuda" and cuda_available():
        return "torch", "checkpoint on a CUDA GPU: torch with fp16 CUDA graphs needs no export step"
    return "onnxruntime", "checkpoint on CPU: ONNX Runtime runs the network faster than torch eager"


def create_runtime(
    backend: str, model: Artifact | str | Path, device: str = "cpu", threads: int = 1, **options
) -> Runtime:
    """An unloaded runtime of ``backend`` (``onnxruntime``, ``tensorrt`` or ``torch``) for ``model``.

    ``options`` go to the runtime's constructor (e.g. ``spinning``, ``provider``, ``fp16`` and
    ``cache_dir`` for ONNX Runtime; ``max_batch`` and ``cuda_graphs`` for torch).
    """
    artifact = model if isinstance(model, Artifact) else resolve(model)
    if backend == "onnxruntime":
        from echoseg.runtime.onnxruntime import OnnxRuntime

        return OnnxRuntime(artifact, device, threads, **options)
    if backend == "tensorrt":
        from echoseg.runtime.tensorrt import TensorRTRuntime

        return TensorRTRuntime(artifact, device, threads, **options)
    if backend == "torch":
        from echoseg.runtime.torch import TorchRuntime

        return TorchRuntime(artifact, device, threads, **options)
    raise ValueError(f"backend must be one of {BACKENDS[1:]}, got {backend!r}")
