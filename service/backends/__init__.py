"""Model backends and the choice between them.

``create_backend(settings)`` turns ``--model`` (a ``.onnx`` file, a TensorRT engine, or a
checkpoint directory) and ``--backend`` into a loaded :class:`Backend`; ``auto`` picks the
fastest one that can run here and logs why.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from service.backends.base import Backend, BackendUnavailable
from service.core.config import Settings

log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendUnavailable", "choose_backend", "create_backend", "model_kind"]

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def model_kind(path: Path) -> str:
    """``onnx``, ``engine`` or ``checkpoint`` (a directory or a ``.safetensors`` file)."""
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix in ENGINE_SUFFIXES:
        return "engine"
    if path.is_dir() or path.suffix == ".safetensors":
        return "checkpoint"
    raise ValueError(
        f"cannot tell what model {path} is: expected a .onnx file, a TensorRT engine "
        f"({', '.join(ENGINE_SUFFIXES)}), a checkpoint directory or a .safetensors file"
    )


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def choose_backend(kind: str, requested: str, device: str) -> tuple[str, str]:
    """The backend to use for a model of ``kind`` and the reason, honouring an explicit request."""
    if requested != "auto":
        if requested == "torch" and kind != "checkpoint":
            raise ValueError(
                "the torch backend needs a checkpoint directory or .safetensors file, not an exported model"
            )
        if requested == "tensorrt" and kind != "engine":
            raise ValueError(
                "the tensorrt backend needs a TensorRT engine file (.engine/.plan); "
                "build one with echoseg export"
            )
        if requested == "onnxruntime" and kind == "engine":
            raise ValueError("a TensorRT engine runs only on the tensorrt backend")
        return requested, "requested"
    if kind == "engine":
        return "tensorrt", "the model is a TensorRT engine"
    if kind == "onnx":
        return "onnxruntime", "the model is an ONNX file"
    if device == "cuda" and _cuda_available():
        return "torch", "checkpoint on a CUDA GPU: torch with fp16 CUDA graphs needs no export step"
    return "onnxruntime", "checkpoint on CPU: ONNX Runtime runs the network faster than torch eager"


def create_backend(settings: Settings) -> Backend:
    """Resolve, build and load the backend ``settings`` asks for (exporting a checkpoint if needed)."""
    path = Path(settings.model)
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist (set --model or ECHOSEG_MODEL)")
    kind = model_kind(path)
    name, why = choose_backend(kind, settings.backend, settings.device)
    log.info("backend %s on %s (%s)", name, settings.device, why)
    threads = settings.intra_op_threads
    if name == "onnxruntime":
        from service.backends.onnxruntime import OnnxRuntimeBackend
        from service.export_cache import onnx_for

        onnx_path = path if kind == "onnx" else onnx_for(path, settings)
        backend: Backend = OnnxRuntimeBackend(
            onnx_path, settings.device, threads, spinning=settings.ort_spinning
        )
    elif name == "torch":
        from service.backends.torch import TorchBackend

        backend = TorchBackend(path, settings.device, threads, max_batch=settings.max_batch)
    else:
        from service.backends.tensorrt import TensorRTBackend

        backend = TensorRTBackend(path, "cuda", threads)
    backend.load()
    return backend
