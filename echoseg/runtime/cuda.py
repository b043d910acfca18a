"""Device memory and one stream for the TensorRT runtime, through torch's CUDA API (no pycuda).

:class:`TorchCuda` does every step of a call on its own stream: the host-to-device copy, the
cast to the engine's input type, the engine's execution (``execute_async_v3`` on the same
stream's handle), the cast back to float32 and the device-to-host copy; then it synchronises
that stream. Nothing crosses streams, so no ``wait_stream`` is needed.

The surface is a small interface so that the runtime's control flow can be tested without a
GPU: a host-memory surface with the same methods stands in for it in the CPU tests.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from echoseg.runtime.base import RuntimeUnavailable


class CudaSurface(Protocol):
    """What the TensorRT runtime needs from a CUDA binding."""

    def device_name(self) -> str: ...

    def upload(self, array: np.ndarray, dtype: np.dtype) -> Any:
        """Host array -> device buffer of ``dtype`` (enqueued on the surface's stream)."""

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """An uninitialised device buffer, for outputs."""

    def pointer(self, buffer: Any) -> int: ...

    @property
    def stream_handle(self) -> int: ...

    def download(self, buffer: Any) -> np.ndarray:
        """Device buffer -> float32 host array (enqueued on the stream, then synchronised)."""

    def synchronize(self) -> None: ...


def cuda_version_major() -> int | None:
    """The CUDA major version torch was built for (None without torch or a CUDA build)."""
    try:
        import torch
    except ImportError:
        return None
    version = getattr(torch.version, "cuda", None)
    return int(version.split(".")[0]) if version else None


class TorchCuda:
    """:class:`CudaSurface` over torch CUDA tensors and one ``torch.cuda.Stream``."""

    def __init__(self, device: int = 0) -> None:
        try:
            import torch
        except ImportError as e:
            raise RuntimeUnavailable("the TensorRT runtime needs torch with CUDA for its buffers") from e
        if not torch.cuda.is_available():
            raise RuntimeUnavailable("TensorRT needs a CUDA GPU, and torch sees none")
        self.torch = torch
        self.device = torch.device("cuda", device)
        self.stream = torch.cuda.Stream(device=self.device)
        self._dtypes = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16}

    def device_name(self) -> str:
        return self.torch.cuda.get_device_name(self.device)

    def _dtype(self, dtype: np.dtype):
        try:
            return self._dtypes[np.dtype(dtype)]
        except KeyError:
            raise ValueError(f"no torch dtype for {dtype}") from None

    def upload(self, array: np.ndarray, dtype: np.dtype):
        host = self.torch.from_numpy(np.ascontiguousarray(array))
        with self.torch.cuda.stream(self.stream):
            return host.to(self.device, non_blocking=False).to(self._dtype(dtype))

    def empty(self, shape: tuple[int, ...], dtype: np.dtype):
        with self.torch.cuda.stream(self.stream):
            return self.torch.empty(shape, dtype=self._dtype(dtype), device=self.device)

    def pointer(self, buffer) -> int:
        return int(buffer.data_ptr())

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def download(self, buffer) -> np.ndarray:
        with self.torch.cuda.stream(self.stream):
            host = buffer.float().cpu()  # a synchronous copy on this stream
        self.stream.synchronize()
        return host.numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()
