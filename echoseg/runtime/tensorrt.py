"""TensorRT engines (``.engine``/``.plan``) with their metadata JSON beside them.

Supported: TensorRT 10 on CUDA 12, the line the ``gpu`` extra pins (``tensorrt-cu12 >=10,<11``)
and the one the GPU image, torch's CUDA build and onnxruntime-gpu share. TensorRT 11 moved to
CUDA 13 and removed ``BuilderFlag.FP16``; another major version is refused with a clear message.

The runtime reads the engine's optimisation profile (``min..max`` batch) and lets the base class
split or pad every batch into it; checks the result of ``set_input_shape`` and
``execute_async_v3``; gives every I/O tensor the engine's own dtype (an fp16 engine takes and
returns float16); and runs copy, cast, execution and copy-back on one stream (see
:mod:`echoseg.runtime.cuda`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from echoseg.artifacts import Artifact, resolve
from echoseg.runtime.base import InferenceError, Runtime, RuntimeUnavailable
from echoseg.runtime.cuda import CudaSurface, TorchCuda, cuda_version_major

log = logging.getLogger(__name__)

SUPPORTED_MAJOR = 10
SUPPORTED_CUDA_MAJOR = 12
INSTALL_HINT = "pip install 'echoseg[gpu]'"


def require_tensorrt():
    """Import TensorRT 10, or say what is wrong and how to fix it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeUnavailable(
            "TensorRT is not installed: it comes with the gpu extra, "
            f"{INSTALL_HINT} (needs an NVIDIA GPU with a CUDA 12 driver)"
        ) from e
    check_versions(trt.__version__, cuda_version_major())
    return trt


def check_versions(trt_version: str, cuda_major: int | None) -> None:
    """TensorRT must be 10.x; torch's CUDA build (when torch has one) must be CUDA 12."""
    try:
        major = int(str(trt_version).split(".")[0])
    except ValueError:
        raise RuntimeUnavailable(f"cannot read the TensorRT version {trt_version!r}") from None
    if major != SUPPORTED_MAJOR:
        raise RuntimeUnavailable(
            f"TensorRT {trt_version} is installed, but EchoSeg supports TensorRT {SUPPORTED_MAJOR}.x on "
            f"CUDA {SUPPORTED_CUDA_MAJOR} (TensorRT 11 needs CUDA 13 and dropped the fp16 builder flag): "
            f"pip install 'tensorrt-cu12>=10,<11'"
        )
    if cuda_major is not None and cuda_major != SUPPORTED_CUDA_MAJOR:
        raise RuntimeUnavailable(
            f"torch is built for CUDA {cuda_major}, but TensorRT {trt_version} (tensorrt-cu12) runs on "
            f"CUDA {SUPPORTED_CUDA_MAJOR}: install a CUDA {SUPPORTED_CUDA_MAJOR} build of torch"
        )


def numpy_dtype(trt, dtype) -> np.dtype:
    """TensorRT tensor dtype -> numpy dtype (float32 and float16 are what EchoSeg engines use)."""
    table = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}
    if dtype not in table:
        raise InferenceError(f"unsupported engine tensor type {dtype}; expected FLOAT or HALF")
    return np.dtype(table[dtype])


class TensorRTRuntime(Runtime):
    """A deserialised engine with one execution context."""

    name = "tensorrt"

    def __init__(
        self,
        model: Artifact | str | Path,
        device: str = "cuda",
        threads: int = 1,
        *,
        cuda: CudaSurface | None = None,
    ) -> None:
        artifact = model if isinstance(model, Artifact) else resolve(model)
        if artifact.kind != "engine":
            raise ValueError(
                f"the tensorrt runtime needs a TensorRT engine file, got a {artifact.kind}; "
                "build one with echoseg export tensorrt"
            )
        if device != "cuda":
            raise ValueError("TensorRT engines run only on device 'cuda'")
        super().__init__(artifact, device, threads)
        self._cuda = cuda
        self.engine = None
        self.context = None

    def load(self) -> None:
        trt = require_tensorrt()
        self.trt = trt
        self.cuda = self._cuda or TorchCuda()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._logger)
        path = self.artifact.path
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeUnavailable(
                f"TensorRT {trt.__version__} could not load {path.name} "
                "(built by another TensorRT version or for another GPU? rebuild it on this one)"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeUnavailable(f"TensorRT could not create an execution context for {path.name}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RuntimeUnavailable(
                f"{path.name}: expected one input and one output, got {inputs} -> {outputs}"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = numpy_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self.output_dtype = numpy_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
        low, _opt, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.model_min_batch, self.model_max_batch = int(low[0]), int(high[0])
        # fp16 I/O (an fp16 export) or fp16 kernels (built with --fp16)
        fp16_build = bool(self.artifact.extra.get("build", {}).get("fp16"))
        self.precision = "fp16" if self.input_dtype == np.float16 or fp16_build else "fp32"
        self.model_id = self.artifact.model_id()
        log.info(
            "tensorrt %s engine on %s: batch %d..%d, input %s, output %s",
            trt.__version__,
            self.cuda.device_name(),
            self.model_min_batch,
            self.model_max_batch,
            self.input_dtype.name,
            self.output_dtype.name,
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.context is None:
            raise InferenceError("the tensorrt runtime is closed")
        cuda = self.cuda
        frames = cuda.upload(batch, self.input_dtype)  # (B, k, S, S) in the engine's input type
        if not self.context.set_input_shape(self.input_name, tuple(batch.shape)):
            raise InferenceError(
                f"TensorRT refused input shape {tuple(batch.shape)} "
                f"(profile batch {self.model_min_batch}..{self.model_max_batch})"
            )
        shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))
        if any(d < 0 for d in shape):
            raise InferenceError(f"TensorRT left the output shape unresolved: {shape}")
        logits = cuda.empty(shape, self.output_dtype)
        if not self.context.set_tensor_address(self.input_name, cuda.pointer(frames)):
            raise InferenceError(f"TensorRT refused the address of {self.input_name!r}")
        if not self.context.set_tensor_address(self.output_name, cuda.pointer(logits)):
            raise InferenceError(f"TensorRT refused the address of {self.output_name!r}")
        if not self.context.execute_async_v3(cuda.stream_handle):
            raise InferenceError(f"TensorRT execution failed on a batch of {batch.shape[0]} (see its log)")
        return cuda.download(logits)  # float32, after the stream has finished

    def close(self) -> None:
        self.context = None
        self.engine = None
