"""TensorRT backend: a serialised engine (``.engine``/``.plan``) with its metadata JSON beside it.

The engine file holds no EchoSeg metadata, so the exporter writes ``<engine>.json`` next to it
(the same ``echoseg.*`` keys as the ONNX metadata). I/O buffers are torch CUDA tensors.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from service.backends.base import Backend, BackendUnavailable, file_digest, make_model_id, run_static
from training.model.config import ModelConfig

log = logging.getLogger(__name__)


def metadata_path(engine: Path) -> Path:
    """``model.engine`` -> ``model.engine.json`` (preferred) or ``model.json``."""
    beside = engine.with_name(engine.name + ".json")
    return beside if beside.exists() else engine.with_suffix(".json")


class TensorRTBackend(Backend):
    name = "tensorrt"

    def load(self) -> None:
        try:
            import tensorrt as trt
        except ImportError as e:
            raise BackendUnavailable(
                "the tensorrt backend needs TensorRT (pip install 'echoseg[gpu]') and a CUDA GPU; "
                "use --backend onnxruntime or torch"
            ) from e
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable("the tensorrt backend needs a CUDA GPU; none was found")
        meta_file = metadata_path(self.model_path)
        if not meta_file.exists():
            raise ValueError(f"no metadata JSON beside the engine (looked for {meta_file.name})")
        self.meta = {k: str(v) for k, v in json.loads(meta_file.read_text()).items()}
        self.config = ModelConfig.from_dict(json.loads(self.meta["echoseg.config"]))
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(self.model_path.read_bytes())
        if self.engine is None:
            raise ValueError(f"{self.model_path.name} is not a TensorRT engine for this TensorRT/GPU")
        self.context = self.engine.create_execution_context()
        self.input_name, self.output_name = "frames", "logits"
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.static_batch = shape[0] if shape[0] > 0 else None
        fp16 = self.engine.get_tensor_dtype(self.input_name) == trt.DataType.HALF
        self.precision = "fp16" if fp16 or self.meta.get("echoseg.precision") == "fp16" else "fp32"
        self.torch_dtype = torch.float16 if fp16 else torch.float32
        self.stream = torch.cuda.Stream()
        self.model_id = make_model_id(self.config, file_digest(self.model_path))
        log.info(
            "tensorrt %s engine, batch %s, %s",
            trt.__version__,
            self.static_batch or "dynamic",
            self.precision,
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).to("cuda").to(self.torch_dtype)
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        y = torch.empty(out_shape, device="cuda", dtype=self.torch_dtype)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, y.data_ptr())
        with torch.cuda.stream(self.stream):
            self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return y.float().cpu().numpy()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.static_batch:
            return run_static(self._run, batch, self.static_batch)
        return self._run(batch)

    def close(self) -> None:
        self.context = None
        self.engine = None
