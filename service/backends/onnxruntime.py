"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider.

The model's configuration comes from the ONNX metadata (``echoseg.config``; see
docs/architecture.md), so the file alone says how frames must be preprocessed. A model exported
with a static batch (the ``conv`` calibration form) is run by padding/splitting batches.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from service.backends.base import Backend, BackendUnavailable, file_digest, make_model_id, run_static
from training.model.config import ModelConfig

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers in preference order for ``device`` among those this build has."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if not gpu:
        raise BackendUnavailable(
            f"device 'cuda' needs onnxruntime-gpu (available providers: {available}); "
            "install the 'gpu' extra or use --device cpu"
        )
    return [*gpu, "CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, *args, spinning: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spinning = spinning

    def load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads spin by default; on a few shared cores that steals the CPU the event
        # loop and the other threads need (measured: p50 frame latency ~10x worse under load).
        spin = "1" if self.spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        providers = choose_providers(self.device, ort.get_available_providers())
        self.session = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=providers)
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if "echoseg.config" not in self.meta:
            raise ValueError(
                f"{self.model_path.name} has no 'echoseg.config' metadata; export it with echoseg export"
            )
        self.config = ModelConfig.from_dict(json.loads(self.meta["echoseg.config"]))
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        self.precision = "fp16" if self.input_dtype == np.float16 else "fp32"
        batch_dim = inp.shape[0]
        self.static_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self.model_id = make_model_id(self.config, file_digest(self.model_path))
        log.info(
            "onnxruntime %s: providers %s, %d intra-op threads, batch %s, %s",
            ort.__version__,
            self.session.get_providers(),
            self.threads,
            self.static_batch or "dynamic",
            self.precision,
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: batch.astype(self.input_dtype, copy=False)})
        return np.asarray(logits, dtype=np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.static_batch:
            return run_static(self._run, batch, self.static_batch)
        return self._run(batch)

    def close(self) -> None:
        self.session = None
