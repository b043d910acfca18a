"""TensorRT engine build from an exported ``.onnx`` (TensorRT 10 Python API), and its check.

- The ONNX parser fills an explicit-batch network (always explicit in TensorRT 10). An fp16
  export (float16 input) is parsed as a *strongly typed* network, so its types come from the
  file; an fp32 export can still use fp16 kernels with ``BuilderFlag.FP16`` (``--fp16``).
- One optimisation profile covers ``min/opt/max`` batch sizes for a dynamic-batch (``matmul``)
  export; a fixed-batch (``conv``) export gets a profile of exactly its batch. The runtime splits
  or pads every batch into the profile.
- The builder's workspace is bounded with ``set_memory_pool_limit``; a timing cache file is read
  before and written after the build, so rebuilding on the same GPU is fast.
- ``<plan>.json`` beside the engine holds the ONNX file's ``echoseg.*`` metadata under
  ``"metadata"`` (the schema of :mod:`echoseg.artifacts`, which the runtime reads), the build
  settings, and the TensorRT version and GPU it was built with.

Engines run through :class:`echoseg.runtime.tensorrt.TensorRTRuntime`, the same code the
service serves with. TensorRT is the ``gpu`` extra (TensorRT 10, CUDA 12); without it every
entry point raises :class:`TensorRTUnavailable` with the install line.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoseg.artifacts import engine_metadata_path, write_engine_metadata
from echoseg.runtime.base import DEFAULT_MAX_BATCH, RuntimeUnavailable, profile_batches
from echoseg.runtime.cuda import CudaSurface, TorchCuda
from echoseg.runtime.onnxruntime import OnnxRuntime
from echoseg.runtime.tensorrt import INSTALL_HINT, TensorRTRuntime, require_tensorrt
from export.onnx import INPUT_NAME, read_metadata

logger = logging.getLogger(__name__)

# Missing TensorRT, a CUDA GPU, or a supported version: the CLI exits 3 with the message.
TensorRTUnavailable = RuntimeUnavailable
metadata_path = engine_metadata_path

__all__ = [
    "INSTALL_HINT",
    "BuildSettings",
    "TensorRTUnavailable",
    "build_engine",
    "check_engine",
    "metadata_path",
]


@dataclass
class BuildSettings:
    """Engine build options (``echoseg export tensorrt`` flags); the batches are the engine's
    optimisation profile, ``opt_batch`` derived from ``max_batch`` by :func:`profile_batches`
    unless given."""

    fp16: bool = False
    min_batch: int = 1
    opt_batch: int | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_mb: int = 2048
    timing_cache: str | None = None

    def __post_init__(self) -> None:
        if self.opt_batch is None:
            self.opt_batch = max(self.min_batch, profile_batches(self.max_batch)[1])

    def validate(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"need 1 <= min-batch <= opt-batch <= max-batch, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if self.workspace_mb < 1:
            raise ValueError(f"workspace-mb must be positive, got {self.workspace_mb}")


def _profile_batches(props: dict[str, str], settings: BuildSettings) -> tuple[int, int, int]:
    if props["echoseg.batch"] == "dynamic":
        return settings.min_batch, settings.opt_batch, settings.max_batch
    fixed = int(props["echoseg.batch"])
    if (settings.min_batch, settings.opt_batch, settings.max_batch) != profile_batches():
        logger.warning("the .onnx has a fixed batch of %d; the engine profile uses it", fixed)
    return fixed, fixed, fixed


def _parse(trt, builder, logger_trt, onnx_path: Path, strongly_typed: bool):
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger_trt)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    return network, parser


def _load_timing_cache(config, path: str | None):
    data = Path(path).read_bytes() if path and Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    settings: BuildSettings | None = None,
    cuda: CudaSurface | None = None,
) -> Path:
    """Build and serialise an engine for ``onnx_path``; write ``plan_path`` and its metadata JSON."""
    settings = settings or BuildSettings()
    settings.validate()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    config_model, props = read_metadata(onnx_path)
    trt = require_tensorrt()
    cuda = cuda or TorchCuda()

    strongly_typed = props["echoseg.precision"] == "fp16"
    logger_trt = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger_trt)
    network, _parser = _parse(trt, builder, logger_trt, onnx_path, strongly_typed)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if settings.fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)  # TensorRT 10 (the pinned line) still has it
    if props["echoseg.precision"] == "int8":  # explicit quantization: the file's Q/DQ scales rule
        config.set_flag(trt.BuilderFlag.INT8)
    cache = _load_timing_cache(config, settings.timing_cache)

    low, opt, high = _profile_batches(props, settings)
    k, size = config_model.num_frames, config_model.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (low, k, size, size), (opt, k, size, size), (high, k, size, size))
    config.add_optimization_profile(profile)

    logger.info(
        "building TensorRT %s engine for %s (batch %d/%d/%d)", trt.__version__, onnx_path, low, opt, high
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path.name} (see its log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    if settings.timing_cache:
        Path(settings.timing_cache).write_bytes(bytes(cache.serialize()))

    write_engine_metadata(
        plan_path,
        props,
        onnx={"path": onnx_path.name, "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest()},
        build={
            **asdict(settings),
            "profile": {"min": low, "opt": opt, "max": high},
            "strongly_typed": strongly_typed,
        },
        tensorrt_version=trt.__version__,
        device=cuda.device_name(),
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return plan_path


def check_engine(
    plan_path: str | Path,
    onnx_path: str | Path,
    data: str | Path | None = None,
    max_clips: int = 2,
    seed: int = 0,
    cuda: CudaSurface | None = None,
) -> dict[str, Any]:
    """Run the engine at its profile's smallest, middle and largest batch and beyond it, and compare
    with ONNX Runtime (CPU) on the same windows.

    TensorRT may use TF32/fp16 kernels, so the gate is the masks (Dice >= 0.999 on every
    informative comparison, 0.98 for an int8 file, see :func:`export.check.passes`); the logit
    differences are reported alongside. The windows come from ``data``'s clips when given (what a
    trained model's masks are informative on), else random frames.
    """
    from echoseg.preprocess import random_windows
    from export.check import FP16_MIN_DICE, INT8_MIN_DICE, clip_windows_from, compare, passes, run_all

    engine = TensorRTRuntime(plan_path, "cuda", cuda=cuda)
    engine.load()
    reference = OnnxRuntime(onnx_path, "cpu")
    reference.load()
    config = engine.config
    pool = clip_windows_from(data, config, max_clips) if data is not None else None
    low, high = engine.model_min_batch, engine.model_max_batch
    # within the profile, and one past it: the runtime must split that batch
    batches = sorted({low, (low + high) // 2, high, high + 1})
    results = []
    try:
        for i, b in enumerate(batches):
            if pool is not None:
                windows = pool[np.random.default_rng(seed + i).choice(len(pool), b, replace=len(pool) < b)]
            else:
                windows = random_windows(config, b, seed + i)
            parity = compare(
                run_all(reference, windows), engine.infer(windows), config.threshold, f"batch {b}"
            )
            results.append(parity)
    finally:
        engine.close()
        reference.close()
    gate = "int8" if reference.precision == "int8" else "fp16"  # an int8 engine vs ORT on the same QDQ file
    return {
        "plan": str(plan_path),
        "onnx": str(onnx_path),
        "ok": passes(results, gate),
        "min_dice": INT8_MIN_DICE if gate == "int8" else FP16_MIN_DICE,
        "profile": [low, high],
        "results": [r.to_dict() for r in results],
    }
