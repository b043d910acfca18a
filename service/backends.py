"""The model the service runs: ``--model`` and ``--backend`` turned into a loaded runtime.

The runtimes themselves are the core's (:mod:`echoseg.runtime`), the same code that the export
checks, the benchmarks and the GPU check run. This module adds what only the service does: a
checkpoint served on ONNX Runtime is exported once into the cache (``service.export_cache``),
and the TensorRT provider's engine cache lives under the service's cache directory. torch is
imported only when the torch or TensorRT backend is chosen (or a checkpoint is exported).
"""

from __future__ import annotations

import logging
from pathlib import Path

from echoseg.artifacts import model_kind
from echoseg.runtime import RUNTIMES, Runtime, RuntimeUnavailable, choose_backend, create_runtime
from service.core.config import Settings

log = logging.getLogger(__name__)

# The service's name for a loaded runtime.
Backend = Runtime
BackendUnavailable = RuntimeUnavailable

__all__ = ["Backend", "BackendUnavailable", "create_backend"]


def create_backend(settings: Settings) -> Backend:
    """Resolve, build and load the runtime ``settings`` ask for (exporting a checkpoint if needed)."""
    path = Path(settings.model)
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist (set --model or ECHOSEG_MODEL)")
    kind = model_kind(path)
    name, why = choose_backend(kind, settings.backend, settings.device)
    if settings.int8 and name != "onnxruntime":
        raise ValueError(f"int8 serving runs on ONNX Runtime, not on the {name} backend")
    log.info("backend %s on %s (%s)", name, settings.device, why)
    threads = settings.intra_op_threads
    if name == "onnxruntime":
        from service.export_cache import cache_root, servable_onnx

        onnx_path = servable_onnx(path, kind, settings)
        runtime = create_runtime(
            "onnxruntime",
            onnx_path,
            settings.device,
            threads,
            spinning=settings.ort_spinning,
            provider=settings.ort_provider,
            fp16=settings.fp16,
            cache_dir=cache_root(settings) / "ort-tensorrt",
            profile_max_batch=settings.max_batch,
        )
    elif name == "torch":
        runtime = create_runtime("torch", path, settings.device, threads, graph_max_batch=settings.max_batch)
    else:  # a runtime with no service options; one that runs on a single device runs there
        devices = RUNTIMES[name].devices
        device = settings.device if settings.device in devices else devices[0]
        runtime = create_runtime(name, path, device, threads)
    runtime.load()
    return runtime
