"""ONNX Runtime: the CPU, CUDA and TensorRT execution providers.

The model's configuration comes from the ONNX metadata (``echoseg.config``), so the file alone
says how frames must be preprocessed. A model exported with a fixed batch (the ``conv``
calibration form) takes exactly that batch; the base class splits and pads to it.

On a GPU the TensorRT provider, when this ONNX Runtime build has it, comes first and is
configured: its engines are cached on disk (``engine_cache_dir``) so a restart does not rebuild
them, one optimisation profile spans batch ``1..profile_max_batch`` (:func:`profile_batches`) instead of an
engine per batch size, and fp16 kernels are enabled when asked. CUDA follows, then the CPU.
The CPU and GPU wheels of ONNX Runtime (``onnxruntime`` and ``onnxruntime-gpu``) install into
the same package; with both installed, the GPU providers are lost, so that is refused here.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import numpy as np

from echoseg.artifacts import Artifact, resolve
from echoseg.runtime.base import (
    DEFAULT_MAX_BATCH,
    InferenceError,
    Runtime,
    RuntimeUnavailable,
    profile_batches,
)

log = logging.getLogger(__name__)

TRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
OPTIMIZATION_LEVELS = ("basic", "extended", "all")


def installed_onnxruntime_wheels() -> list[str]:
    """Which ONNX Runtime distributions are installed (``onnxruntime``, ``onnxruntime-gpu``, ...)."""
    names = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        names.append(name)
    return names


def check_wheels(device: str, wheels: list[str] | None = None) -> None:
    """Refuse a GPU session when the CPU wheel shadows the GPU one."""
    wheels = installed_onnxruntime_wheels() if wheels is None else wheels
    if device == "cuda" and {"onnxruntime", "onnxruntime-gpu"} <= set(wheels):
        raise RuntimeUnavailable(
            "both onnxruntime and onnxruntime-gpu are installed; they share one package and the CPU "
            "build hides the GPU providers: pip uninstall -y onnxruntime onnxruntime-gpu && "
            "pip install 'echoseg[gpu]'"
        )


def trt_provider_options(
    artifact: Artifact, cache_dir: Path, fp16: bool, profile_max_batch: int
) -> dict[str, Any]:
    """TensorRT provider options: an on-disk engine and timing cache, fp16, one batch profile."""
    cfg = artifact.config
    dims = f"{cfg.num_frames}x{cfg.input_size}x{cfg.input_size}"
    fixed = artifact.batch if isinstance(artifact.batch, int) else None
    low, opt, high = profile_batches(profile_max_batch, fixed)
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_fp16_enable": bool(fp16),
        "trt_profile_min_shapes": f"frames:{low}x{dims}",
        "trt_profile_opt_shapes": f"frames:{opt}x{dims}",
        "trt_profile_max_shapes": f"frames:{high}x{dims}",
    }


def choose_providers(
    device: str,
    available: list[str],
    provider: str = "auto",
    trt_options: dict[str, Any] | None = None,
) -> list:
    """Execution providers in preference order for ``device`` among those this build has."""
    if provider not in PROVIDER_CHOICES:
        raise ValueError(f"provider must be one of {PROVIDER_CHOICES}, got {provider!r}")
    if device == "cpu" or provider == "cpu":
        return [CPU_PROVIDER]
    # the TensorRT provider hands what it cannot take to CUDA, and CUDA to the CPU
    order = {
        "auto": [TRT_PROVIDER, CUDA_PROVIDER],
        "cuda": [CUDA_PROVIDER],
        "tensorrt": [TRT_PROVIDER, CUDA_PROVIDER],
    }
    if provider == "tensorrt" and TRT_PROVIDER not in available:
        raise RuntimeUnavailable(
            f"this onnxruntime build has no TensorRT provider (available: {available}); "
            "install onnxruntime-gpu with TensorRT, or use provider 'cuda'"
        )
    chosen = [p for p in order[provider] if p in available]
    if not chosen:
        raise RuntimeUnavailable(
            f"device 'cuda' needs onnxruntime-gpu (available providers: {available}); "
            "install the 'gpu' extra or use --device cpu"
        )
    return [*((p, trt_options or {}) if p == TRT_PROVIDER else p for p in chosen), CPU_PROVIDER]


class OnnxRuntime(Runtime):
    """An ``.onnx`` export in an ONNX Runtime session."""

    name = "onnxruntime"

    def __init__(
        self,
        model: Artifact | str | Path,
        device: str = "cpu",
        threads: int = 1,
        *,
        spinning: bool = False,
        provider: str = "auto",
        fp16: bool = False,
        cache_dir: str | Path | None = None,
        profile_max_batch: int = DEFAULT_MAX_BATCH,
        optimization: str = "all",
        parallel: bool = False,
    ) -> None:
        """``provider``: see :func:`choose_providers`; ``fp16``, ``cache_dir`` and
        ``profile_max_batch`` configure the TensorRT provider (:func:`trt_provider_options`);
        ``optimization`` (``basic``/``extended``/``all``) and ``parallel`` are ONNX Runtime's graph
        optimisation level and execution mode (the defaults are what the service runs)."""
        if optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {OPTIMIZATION_LEVELS}, got {optimization!r}")
        artifact = model if isinstance(model, Artifact) else resolve(model)
        if artifact.kind != "onnx":
            raise ValueError(f"the onnxruntime runtime needs an .onnx file, got a {artifact.kind}")
        super().__init__(artifact, device, threads)
        self.spinning = spinning
        self.provider = provider
        self.fp16 = fp16
        self.cache_dir = Path(cache_dir) if cache_dir else artifact.path.parent / "ort-trt-cache"
        self.profile_max_batch = profile_max_batch
        self.optimization = optimization
        self.parallel = parallel
        self.session = None

    def session_options(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        mode = ort.ExecutionMode.ORT_PARALLEL if self.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
        opts.execution_mode = mode
        opts.graph_optimization_level = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        # Idle intra-op threads spin by default; on a few shared cores that steals the CPU the event
        # loop and the other threads need (measured: p50 frame latency ~10x worse under load).
        spin = "1" if self.spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return opts

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeUnavailable(
                "ONNX Runtime is not installed: pip install 'echoseg[cpu]' (or 'echoseg[gpu]' on a GPU)"
            ) from e
        check_wheels(self.device)
        artifact = self.artifact
        trt_options = None
        if self.device == "cuda":
            trt_options = trt_provider_options(artifact, self.cache_dir, self.fp16, self.profile_max_batch)
        providers = choose_providers(self.device, ort.get_available_providers(), self.provider, trt_options)
        self.session = ort.InferenceSession(
            str(artifact.path), sess_options=self.session_options(), providers=providers
        )
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if self.session.get_providers()[0] != wanted:
            log.warning("%s did not load; running on %s", wanted, self.session.get_providers())
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        self.precision = "fp16" if self.input_dtype == np.float16 else "fp32"
        if artifact.precision == "int8":  # a QDQ graph: float input and output, int8 inside
            self.precision = "int8"
        batch_dim = inp.shape[0]
        if isinstance(batch_dim, int) and batch_dim > 0:
            self.model_min_batch = self.model_max_batch = batch_dim
        self.model_id = artifact.model_id()
        log.info(
            "onnxruntime %s: providers %s, %d intra-op threads, batch %s, %s",
            ort.__version__,
            self.session.get_providers(),
            self.threads,
            self.static_batch or "dynamic",
            self.precision,
        )

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers()) if self.session is not None else []

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise InferenceError("the onnxruntime runtime is closed")
        (logits,) = self.session.run(None, {self.input_name: batch.astype(self.input_dtype, copy=False)})
        return np.asarray(logits, dtype=np.float32)

    def close(self) -> None:
        self.session = None
