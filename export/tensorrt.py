"""TensorRT engine build from an exported ``.onnx`` (TensorRT 10 Python API), run and check.

- The ONNX parser fills an explicit-batch network (always explicit in TensorRT 10). An fp16
  export (float16 input) is parsed as a *strongly typed* network, so its types come from the
  file; an fp32 export can still use fp16 kernels with ``BuilderFlag.FP16``.
- One optimisation profile covers ``min/opt/max`` batch sizes for a dynamic-batch (``matmul``)
  export; a fixed-batch (``conv``) export gets a profile of exactly its batch.
- The builder's workspace is bounded with ``set_memory_pool_limit``; a timing cache file is read
  before and written after the build, so rebuilding on the same GPU is fast.
- ``<plan>.json`` beside the engine keeps the ONNX metadata, the build settings and the TensorRT
  version, so the engine alone tells the service how to prepare frames.

Engines run with torch CUDA tensors as I/O buffers (no pycuda). TensorRT is the ``gpu`` extra;
without it every entry point raises :class:`TensorRTUnavailable` with the install line.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'echoseg[gpu]'"


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a CUDA GPU) is missing, so no engine can be built or run here."""


def require_tensorrt():
    """Import TensorRT or say how to get it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(
            "TensorRT is not installed: it comes with the gpu extra, "
            f"{INSTALL_HINT} (needs an NVIDIA GPU with a CUDA driver); nothing was built"
        ) from e
    return trt


def require_cuda():
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT engines need a CUDA GPU, and torch sees none")
    return torch


@dataclass
class BuildSettings:
    """Engine build options (``echoseg export tensorrt`` flags)."""

    fp16: bool = False
    min_batch: int = 1
    opt_batch: int = 4
    max_batch: int = 16
    workspace_mb: int = 2048
    timing_cache: str | None = None

    def validate(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"need 1 <= min-batch <= opt-batch <= max-batch, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if self.workspace_mb < 1:
            raise ValueError(f"workspace-mb must be positive, got {self.workspace_mb}")


def metadata_path(plan: str | Path) -> Path:
    """Where the engine's metadata JSON lives: ``<plan>.json``."""
    return Path(f"{plan}.json")


def _profile_batches(props: dict[str, str], settings: BuildSettings) -> tuple[int, int, int]:
    if props["echoseg.batch"] == "dynamic":
        return settings.min_batch, settings.opt_batch, settings.max_batch
    fixed = int(props["echoseg.batch"])
    if (settings.min_batch, settings.opt_batch, settings.max_batch) != (1, 4, 16):
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


def build_engine(onnx_path: str | Path, plan_path: str | Path, settings: BuildSettings | None = None) -> Path:
    """Build and serialise an engine for ``onnx_path``; write ``plan_path`` and its metadata JSON."""
    from export.onnx import INPUT_NAME, read_metadata

    settings = settings or BuildSettings()
    settings.validate()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    config_model, props = read_metadata(onnx_path)
    trt = require_tensorrt()
    require_cuda()

    strongly_typed = props["echoseg.precision"] == "fp16"
    logger_trt = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger_trt)
    network, _parser = _parse(trt, builder, logger_trt, onnx_path, strongly_typed)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if settings.fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
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

    metadata = engine_metadata(onnx_path, props, settings, (low, opt, high), strongly_typed, trt.__version__)
    metadata_path(plan_path).write_text(json.dumps(metadata, indent=2) + "\n")
    return plan_path


def engine_metadata(
    onnx_path: Path,
    props: dict[str, str],
    settings: BuildSettings,
    batches: tuple[int, int, int],
    strongly_typed: bool,
    trt_version: str,
) -> dict[str, Any]:
    """What ``<plan>.json`` records: the ONNX metadata, the build and the software/hardware it used."""
    import torch

    return {
        "onnx": {
            "path": onnx_path.name,
            "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "metadata": props,
        },
        "build": {
            **asdict(settings),
            "profile": {"min": batches[0], "opt": batches[1], "max": batches[2]},
            "strongly_typed": strongly_typed,
        },
        "tensorrt_version": trt_version,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


class EngineRunner:
    """A deserialised engine with one execution context; ``(N, k, S, S)`` float32 in, logits out."""

    def __init__(self, plan_path: str | Path) -> None:
        trt = require_tensorrt()
        self.torch = require_cuda()
        self.trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(
                f"TensorRT could not load {plan_path} (built by another TensorRT version or GPU?)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        low, _, high = self.engine.get_tensor_profile_shape(self.inputs[0], 0)
        self.min_batch, self.max_batch = int(low[0]), int(high[0])

    def _dtype(self, name: str):
        torch, trt = self.torch, self.trt
        return {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}[
            self.engine.get_tensor_dtype(name)
        ]

    def run(self, windows: np.ndarray) -> np.ndarray:
        """One batch within the profile's range: ``(B, k, S, S) -> (B, 1, S, S)`` float32."""
        torch = self.torch
        if not self.min_batch <= len(windows) <= self.max_batch:
            raise ValueError(f"batch {len(windows)} outside the engine's {self.min_batch}..{self.max_batch}")
        name_in, name_out = self.inputs[0], self.outputs[0]
        frames = torch.from_numpy(np.ascontiguousarray(windows)).to("cuda", self._dtype(name_in))
        self.context.set_input_shape(name_in, tuple(frames.shape))
        logits = torch.empty(
            tuple(self.context.get_tensor_shape(name_out)), dtype=self._dtype(name_out), device="cuda"
        )
        self.context.set_tensor_address(name_in, frames.data_ptr())
        self.context.set_tensor_address(name_out, logits.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return logits.float().cpu().numpy()


def check_engine(plan_path: str | Path, onnx_path: str | Path, seed: int = 0) -> dict[str, Any]:
    """Run the engine at its profile's batch sizes and compare with ONNX Runtime (CPU) on the same windows.

    TensorRT may use TF32/fp16 kernels, so the gate is the masks (Dice >= 0.999); the logit
    differences are reported alongside.
    """
    from export.check import FP16_MIN_DICE, OnnxRunner, compare, random_windows
    from export.onnx import read_metadata

    config, _ = read_metadata(onnx_path)
    engine = EngineRunner(plan_path)
    reference = OnnxRunner(onnx_path)
    batches = sorted({engine.min_batch, (engine.min_batch + engine.max_batch) // 2, engine.max_batch})
    results = []
    for i, b in enumerate(batches):
        windows = random_windows(config, b, seed + i)
        parity = compare(reference(windows), engine.run(windows), config.threshold, f"batch {b}")
        results.append(parity.to_dict())
    ok = all(r["dice"] >= FP16_MIN_DICE for r in results)
    return {
        "plan": str(plan_path),
        "onnx": str(onnx_path),
        "ok": ok,
        "min_dice": FP16_MIN_DICE,
        "results": results,
    }
