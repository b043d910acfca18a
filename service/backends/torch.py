"""PyTorch backend: eager on CPU; on CUDA, fp16 weights and one CUDA graph per batch size.

On a GPU a stream's single window is launch-bound, so each batch size the batcher forms is
captured once as a CUDA graph (batches are padded up to the next captured size) and replayed.
The GPU-only path is entered only when ``device == "cuda"``; the CPU path never touches it.
"""

from __future__ import annotations

import logging

import numpy as np

from service.backends.base import Backend, BackendUnavailable, file_digest, make_model_id

log = logging.getLogger(__name__)


def graph_sizes(max_batch: int) -> list[int]:
    """Batch sizes captured as CUDA graphs: powers of two up to ``max_batch``, and ``max_batch``."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return [*sizes, max_batch]


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, *args, max_batch: int = 16, cuda_graphs: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_batch = max_batch
        self.use_graphs = cuda_graphs
        self.graphs: dict[int, tuple] = {}

    def load(self) -> None:
        import torch

        from training.model.io import load_pretrained

        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        model, config, meta = load_pretrained(self.model_path)
        self.config = config
        self.meta = {f"echoseg.{k}": str(v) for k, v in (meta or {}).items()}
        weights = (
            sorted(self.model_path.glob("*.safetensors")) if self.model_path.is_dir() else [self.model_path]
        )
        self.model_id = make_model_id(config, file_digest(*weights[:1]))
        self.model = model.eval().to(self.device)
        if self.device == "cuda":
            self.model = self.model.half()
            self.precision = "fp16"
        log.info(
            "torch %s on %s, %s, %d threads", torch.__version__, self.device, self.precision, self.threads
        )

    def warmup(self, max_batch: int) -> None:
        if self.device == "cuda" and self.use_graphs:
            self._capture(graph_sizes(max_batch))
        super().warmup(max_batch)

    def _capture(self, sizes: list[int]) -> None:
        import torch

        cfg = self.config
        side = torch.cuda.Stream()
        for b in sizes:
            static_in = torch.zeros((b, cfg.num_frames, cfg.input_size, cfg.input_size), device="cuda").half()
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

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self.graphs:
            return self._infer_graph(batch)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            if self.precision == "fp16":
                x = x.half()
            return self.model(x).float().cpu().numpy()

    def _infer_graph(self, batch: np.ndarray) -> np.ndarray:
        import torch

        n = batch.shape[0]
        size = next((b for b in sorted(self.graphs) if b >= n), None)
        if size is None:  # larger than any captured graph: split
            top = max(self.graphs)
            return np.concatenate([self._infer_graph(batch[i : i + top]) for i in range(0, n, top)])
        graph, static_in, static_out = self.graphs[size]
        x = torch.from_numpy(np.ascontiguousarray(batch))
        static_in[:n].copy_(
            x.to("cuda", non_blocking=True).half()
        )  # (n, k, S, S) into the (size, k, S, S) buffer
        if n < size:
            static_in[n:].zero_()
        graph.replay()
        return static_out[:n].float().cpu().numpy()

    def close(self) -> None:
        self.graphs.clear()
        self.model = None
