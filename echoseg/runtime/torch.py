"""PyTorch: eager on CPU; on CUDA, fp16 weights and one CUDA graph per batch size.

On a GPU a stream's single window is launch-bound, so each batch size the batcher forms is
captured once as a CUDA graph (batches are padded up to the next captured size, larger ones
split) and replayed. The GPU-only path is entered only when ``device == "cuda"``.

This is the one runtime that runs the network's Python code, so it is the one place the core
imports the network modules (``training.model``), and only when a checkpoint is loaded here.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np

from echoseg.artifacts import Artifact, resolve
from echoseg.runtime.base import InferenceError, Runtime, RuntimeUnavailable

log = logging.getLogger(__name__)


def graph_sizes(graph_max_batch: int) -> list[int]:
    """Batch sizes captured as CUDA graphs: powers of two up to ``graph_max_batch``, and itself."""
    sizes, b = [], 1
    while b < graph_max_batch:
        sizes.append(b)
        b *= 2
    return [*sizes, graph_max_batch]


class TorchRuntime(Runtime):
    """A checkpoint (or an in-memory network, for checks and benchmarks) run by torch."""

    name = "torch"

    def __init__(
        self,
        model: Artifact | str | Path | object,
        device: str = "cpu",
        threads: int = 1,
        *,
        precision: str | None = None,
        cuda_graphs: bool = True,
        graph_max_batch: int | None = None,
        calibration: str | None = None,
    ) -> None:
        """``model``: a checkpoint (path or :class:`Artifact`) or a network (``nn.Module``).

        ``precision``: ``fp32`` or ``fp16`` (default fp16 on CUDA, fp32 on CPU).
        ``calibration``: run the network in this calibration form (default: its own).
        ``graph_max_batch``: the largest batch captured as a CUDA graph (default: the batcher's
        ``max_batch`` given to :meth:`warmup`); larger batches are split.
        """
        network = None
        if isinstance(model, Artifact | str | Path):
            artifact = model if isinstance(model, Artifact) else resolve(model)
            if artifact.kind != "checkpoint":
                raise ValueError(
                    "the torch runtime needs a checkpoint directory or .safetensors file, "
                    "not an exported model"
                )
        else:
            artifact, network = None, model
        super().__init__(artifact, device, threads)
        if network is not None:
            self.config = network.config
        self.network = network
        self.precision = precision or ("fp16" if device == "cuda" else "fp32")
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {self.precision!r}")
        if self.precision == "fp16" and device == "cpu":
            raise ValueError("fp16 runs only on CUDA; use precision fp32 on the CPU")
        self.use_graphs = cuda_graphs and device == "cuda"
        self.graph_max_batch = graph_max_batch
        self.calibration = calibration
        self.graphs: dict[int, tuple] = {}
        self.model = None

    def load(self) -> None:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailable("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        if self.network is None:
            from training.model.io import load_pretrained

            network, config, _meta = load_pretrained(self.artifact.weights)
            self.config = config
            self.model_id = self.artifact.model_id()
        else:
            network = copy.deepcopy(self.network)
            self.model_id = f"{self.config.preset}-in-memory"
        if self.calibration:
            network.set_calibration(self.calibration)
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.model = network.eval().to(self.device, dtype)
        self._dtype = dtype
        log.info(
            "torch %s on %s, %s, %d threads", torch.__version__, self.device, self.precision, self.threads
        )

    def warmup(self, max_batch: int) -> None:
        if self.use_graphs:
            self._capture(graph_sizes(max(self.graph_max_batch or max_batch, 1)))
        super().warmup(max_batch)

    def _capture(self, sizes: list[int]) -> None:
        import torch

        cfg = self.config
        side = torch.cuda.Stream()
        for b in sizes:
            static_in = torch.zeros(
                (b, cfg.num_frames, cfg.input_size, cfg.input_size), device="cuda", dtype=self._dtype
            )
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):  # let cuDNN pick its kernels before capture
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = self.model(static_in)
            self.graphs[b] = (graph, static_in, static_out)
        log.info("captured CUDA graphs for batch sizes %s", sizes)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self.model is None:
            raise InferenceError("the torch runtime is closed")
        if self.graphs:
            return self._run_graph(batch)
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, self._dtype)
            return self.model(x).float().cpu().numpy()

    def _run_graph(self, batch: np.ndarray) -> np.ndarray:
        import torch

        n = batch.shape[0]
        size = next((b for b in sorted(self.graphs) if b >= n), None)
        if size is None:  # larger than any captured graph: split
            top = max(self.graphs)
            return np.concatenate([self._run_graph(batch[i : i + top]) for i in range(0, n, top)])
        graph, static_in, static_out = self.graphs[size]
        # (n, k, S, S) into the (size, k, S, S) buffer, on the current stream the graph replays on
        static_in[:n].copy_(torch.from_numpy(batch).to("cuda", self._dtype))
        if n < size:
            static_in[n:].zero_()
        graph.replay()
        return static_out[:n].float().cpu().numpy()

    def close(self) -> None:
        self.graphs.clear()
        self.model = None
