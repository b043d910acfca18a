"""A stand-in for the ``tensorrt`` module (TensorRT 10 Python API) and a host-memory CUDA surface.

Enough of the API for the exporter's ``build_engine`` and the runtime's ``TensorRTRuntime`` to
run their real control flow on a CPU: the builder "serialises" a JSON plan naming the ONNX file,
its optimisation profile and tensor types; the engine runs that ONNX file with ONNX Runtime.
Memory is numpy arrays registered by address in :data:`MEMORY`, so the fake execution checks
that every buffer it is given has the shape and dtype the engine expects (a wrong dtype or an
unset shape fails there instead of corrupting memory), and anything the engine did not write
stays NaN.

Knobs for fault tests: ``FAULTS.refuse_shapes`` makes ``set_input_shape`` return False,
``FAULTS.fail_execute`` makes ``execute_async_v3`` return False, ``FAULTS.output_dtype``
overrides the engine's output type (e.g. an fp16-in, fp32-out engine).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np

__version__ = "10.9.0.34"

MEMORY: dict[int, np.ndarray] = {}
FAULTS = types.SimpleNamespace(refuse_shapes=False, fail_execute=False, output_dtype=None)
CALLS: list[tuple] = []  # ("set_input_shape", shape), ("execute", batch)


def reset() -> None:
    MEMORY.clear()
    CALLS.clear()
    FAULTS.refuse_shapes = False
    FAULTS.fail_execute = False
    FAULTS.output_dtype = None


class _Enum:
    def __init__(self, **values) -> None:
        for k, v in values.items():
            setattr(self, k, v)


class DataType:
    FLOAT = "FLOAT"
    HALF = "HALF"


TensorIOMode = _Enum(INPUT="INPUT", OUTPUT="OUTPUT")
NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=0)
MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")
BuilderFlag = _Enum(FP16="FP16")
_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16}


class Logger:
    WARNING = 2

    def __init__(self, level: int = 2) -> None:
        self.level = level


# -- building --------------------------------------------------------------------------------------
class _Network:
    def __init__(self, flags: int) -> None:
        self.strongly_typed = bool(flags)
        self.onnx_path: str | None = None


class OnnxParser:
    def __init__(self, network: _Network, logger: Logger) -> None:
        self.network = network
        self.errors: list[str] = []

    def parse_from_file(self, path: str) -> bool:
        if not Path(path).is_file():
            self.errors.append(f"no file {path}")
            return False
        self.network.onnx_path = str(path)
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data or b"fake-timing-cache"

    def serialize(self) -> bytes:
        return self.data


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, low, opt, high) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


class _BuilderConfig:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.profiles: list[_Profile] = []

    def set_memory_pool_limit(self, pool, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def create_timing_cache(self, data: bytes) -> _TimingCache:
        return _TimingCache(data)

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
        return True

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> _Network:
        return _Network(flags)

    def create_builder_config(self) -> _BuilderConfig:
        return _BuilderConfig()

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: _Network, config: _BuilderConfig) -> bytes:
        import onnxruntime as ort

        session = ort.InferenceSession(network.onnx_path, providers=["CPUExecutionProvider"])
        half = "float16" in session.get_inputs()[0].type
        ((name, (low, opt, high)),) = config.profiles[0].shapes.items()
        plan = {
            "fake_tensorrt": 1,
            "onnx": network.onnx_path,
            "input": name,
            "output": session.get_outputs()[0].name,
            "dtype": DataType.HALF if half else DataType.FLOAT,
            "profile": [list(low), list(opt), list(high)],
            "fp16_flag": BuilderFlag.FP16 in config.flags,
        }
        return json.dumps(plan).encode()


# -- running ---------------------------------------------------------------------------------------
class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes):
        try:
            plan = json.loads(data)
        except ValueError:
            return None  # what TensorRT does with bytes it cannot read
        return _Engine(plan) if isinstance(plan, dict) and plan.get("fake_tensorrt") == 1 else None


class _Engine:
    def __init__(self, plan: dict) -> None:
        import onnxruntime as ort

        self.plan = plan
        self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
        self.names = [plan["input"], plan["output"]]

    @property
    def num_io_tensors(self) -> int:
        return 2

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return TensorIOMode.INPUT if name == self.plan["input"] else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> str:
        if name == self.plan["output"] and FAULTS.output_dtype is not None:
            return FAULTS.output_dtype
        return self.plan["dtype"]

    def get_tensor_shape(self, name: str) -> tuple:
        low = self.plan["profile"][0]
        dynamic = self.plan["profile"][0][0] != self.plan["profile"][2][0]
        shape = [-1 if dynamic else low[0], *low[1:]]
        return tuple(shape) if name == self.plan["input"] else (shape[0], 1, low[2], low[3])

    def get_tensor_profile_shape(self, name: str, profile: int):
        return tuple(tuple(s) for s in self.plan["profile"])

    def create_execution_context(self):
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.input_shape: tuple | None = None
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(int(d) for d in shape)
        CALLS.append(("set_input_shape", shape))
        low, _, high = self.engine.plan["profile"]
        inside = all(lo <= d <= hi for lo, d, hi in zip(low, shape, high, strict=True))
        if FAULTS.refuse_shapes or not inside:
            return False
        self.input_shape = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        if self.input_shape is None:
            return self.engine.get_tensor_shape(name)
        b, _k, s, _ = self.input_shape
        return self.input_shape if name == self.engine.plan["input"] else (b, 1, s, s)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def _buffer(self, name: str, shape: tuple) -> np.ndarray:
        buffer = MEMORY.get(self.addresses.get(name, -1))
        if buffer is None:
            raise AssertionError(f"no registered buffer at the address of {name!r}")
        dtype = _NUMPY[self.engine.get_tensor_dtype(name)]
        if buffer.dtype != dtype or buffer.shape != shape:
            raise AssertionError(
                f"{name!r} buffer is {buffer.dtype} {buffer.shape}; the engine needs {dtype} {shape}"
            )
        return buffer

    def execute_async_v3(self, stream_handle: int) -> bool:
        if FAULTS.fail_execute or self.input_shape is None:
            return False
        CALLS.append(("execute", self.input_shape[0]))
        frames = self._buffer(self.engine.plan["input"], self.input_shape)
        logits = self._buffer(self.engine.plan["output"], self.get_tensor_shape(self.engine.plan["output"]))
        (result,) = self.engine.session.run(None, {self.engine.plan["input"]: frames})
        logits[...] = result.astype(logits.dtype)
        return True


# -- the host-memory CUDA surface ------------------------------------------------------------------
class HostMemory:
    """:class:`echoseg.runtime.cuda.CudaSurface` over numpy arrays registered in :data:`MEMORY`."""

    stream_handle = 0

    def device_name(self) -> str:
        return "host memory (fake CUDA)"

    def _register(self, array: np.ndarray) -> np.ndarray:
        MEMORY[array.ctypes.data] = array
        return array

    def upload(self, array: np.ndarray, dtype) -> np.ndarray:
        return self._register(np.array(array, dtype=dtype, order="C", copy=True))

    def empty(self, shape: tuple, dtype) -> np.ndarray:
        return self._register(np.full(shape, np.nan, dtype=dtype))

    def pointer(self, buffer: np.ndarray) -> int:
        return buffer.ctypes.data

    def download(self, buffer: np.ndarray) -> np.ndarray:
        MEMORY.pop(buffer.ctypes.data, None)
        return buffer.astype(np.float32)

    def synchronize(self) -> None:
        return None
