"""One implementation per runtime, behind ``load`` / ``infer(batch)`` / ``close``; named once in a table.

- ``onnxruntime`` (:class:`~echoseg.runtime.onnxruntime.OnnxRuntime`): an ``.onnx`` export on
  the CPU, CUDA or TensorRT execution providers;
- ``tensorrt`` (:class:`~echoseg.runtime.tensorrt.TensorRTRuntime`): a serialised engine;
- ``torch`` (:class:`~echoseg.runtime.torch.TorchRuntime`): a checkpoint, eager or CUDA graphs.

The table is what the rest reads: the service's ``backend`` setting and ``--backend`` choices,
its ``/v1/models`` schema, :func:`choose_backend`'s checks and the benchmarks' choices all come
from :data:`RUNTIMES`, so a new runtime is one module plus one row. Each row names its class by
import path, and the class is imported only when a runtime of its kind is created, so an ONNX
Runtime deployment never loads torch.

The word "batch" has four meanings here, each with its own name: the batcher's ``max_batch``
(how many windows one call gathers; :data:`DEFAULT_MAX_BATCH`), a runtime's
``model_min_batch``/``model_max_batch`` (what the model file accepts), the TensorRT optimisation
profile (:func:`~echoseg.runtime.base.profile_batches`) and the torch runtime's
``graph_max_batch`` (the largest CUDA graph captured).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from echoseg.artifacts import Artifact, resolve
from echoseg.runtime.base import (
    DEFAULT_MAX_BATCH,
    DEVICES,
    InferenceError,
    Runtime,
    RuntimeUnavailable,
    batch_pieces,
    profile_batches,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeSpec:
    """One row of :data:`RUNTIMES`: a runtime's class and what it can run."""

    name: str
    target: str  # "module:Class", imported when a runtime of this kind is created
    model_kinds: tuple[str, ...]  # what echoseg.artifacts.model_kind says the file is
    devices: tuple[str, ...]
    wrong_model: str  # the error when the model file is of another kind
    exported_from: tuple[str, ...] = ()  # kinds the service exports to this runtime's kind first

    def load_class(self) -> type[Runtime]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


_ONNX = "the onnxruntime backend needs an .onnx file or a checkpoint; an engine runs only on tensorrt"
_TORCH = "the torch backend needs a checkpoint directory or .safetensors file, not an exported model"
_TRT = "the tensorrt backend needs a TensorRT engine file (.engine/.plan): echoseg export tensorrt"

RUNTIMES: dict[str, RuntimeSpec] = {  # name: class, model kinds, devices, error for another kind
    "onnxruntime": RuntimeSpec(
        "onnxruntime", "echoseg.runtime.onnxruntime:OnnxRuntime", ("onnx",), DEVICES, _ONNX, ("checkpoint",)
    ),
    "torch": RuntimeSpec("torch", "echoseg.runtime.torch:TorchRuntime", ("checkpoint",), DEVICES, _TORCH),
    "tensorrt": RuntimeSpec(
        "tensorrt", "echoseg.runtime.tensorrt:TensorRTRuntime", ("engine",), ("cuda",), _TRT
    ),
}
RUNTIME_NAMES = tuple(RUNTIMES)
BACKENDS = ("auto", *RUNTIME_NAMES)  # the service's choices: a runtime, or auto

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_BATCH",
    "DEVICES",
    "RUNTIMES",
    "RUNTIME_NAMES",
    "InferenceError",
    "Runtime",
    "RuntimeSpec",
    "RuntimeUnavailable",
    "batch_pieces",
    "choose_backend",
    "create_runtime",
    "profile_batches",
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
        spec = RUNTIMES[requested]
        if kind not in spec.model_kinds + spec.exported_from:
            raise ValueError(spec.wrong_model)
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
    """An unloaded runtime of ``backend`` (a name in :data:`RUNTIMES`) for ``model``.

    ``options`` go to the runtime's constructor (e.g. ``spinning``, ``provider``, ``fp16``,
    ``cache_dir`` and ``profile_max_batch`` for ONNX Runtime; ``graph_max_batch`` and
    ``cuda_graphs`` for torch).
    """
    if backend not in RUNTIMES:
        raise ValueError(f"backend must be one of {RUNTIME_NAMES}, got {backend!r}")
    spec = RUNTIMES[backend]
    if device not in spec.devices:
        raise ValueError(f"the {backend} backend runs on {' or '.join(spec.devices)}, not {device!r}")
    artifact = model if isinstance(model, Artifact) else resolve(model)
    return spec.load_class()(artifact, device, threads, **options)
