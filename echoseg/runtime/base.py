"""The runtime interface: ``load`` / ``infer(batch)`` / ``close``, in the manner of a Triton backend.

A runtime owns one model on one device. ``infer`` takes a batch of normalised windows
``(B, k, S, S)`` and returns one logit map per window ``(B, 1, S, S)`` float32, whatever batch
sizes the model itself accepts: a model compiled for a fixed batch, or a TensorRT engine whose
optimisation profile spans ``min..max``, gets the batch split into pieces that fit and the last
piece padded (with copies of its final window) up to the smallest size it accepts. The service's
micro-batcher, ``echoseg export check``, ``model-info --latency``, the benchmarks and the GPU
check all run models through this interface. Runtimes are not thread-safe: one thread calls them.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from echoseg.artifacts import Artifact
from echoseg.config import ModelConfig

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
DEFAULT_MAX_BATCH = 16  # the batcher's largest batch of windows, and what the sizes below default to


class RuntimeUnavailable(RuntimeError):
    """The requested runtime cannot run here (library missing, no GPU, wrong model file)."""


class InferenceError(RuntimeError):
    """A runtime failed on a batch; the message says which step and why."""


def batch_pieces(n: int, low: int, high: int | None) -> list[tuple[int, int, int]]:
    """How to run ``n`` windows on a model that takes ``low..high`` at once.

    Returns ``[(start, stop, size)]``: windows ``start:stop`` run as one call of batch ``size``
    (``size - (stop - start)`` padding windows when the piece is smaller than ``low``).
    """
    if n < 1:
        raise ValueError(f"a batch needs at least one window, got {n}")
    if low < 1 or (high is not None and high < low):
        raise ValueError(f"invalid batch range {low}..{high}")
    step = high or n
    return [(s, min(s + step, n), max(min(s + step, n) - s, low)) for s in range(0, n, step)]


def profile_batches(max_batch: int = DEFAULT_MAX_BATCH, fixed: int | None = None) -> tuple[int, int, int]:
    """The TensorRT optimisation profile ``(min, opt, max)`` for batches up to ``max_batch``.

    A model exported with a ``fixed`` batch takes only that one; otherwise the profile spans
    ``1..max_batch`` and is tuned for half of it (the batch a busy batcher forms most often).
    The TensorRT provider of ONNX Runtime and ``echoseg export tensorrt`` both size it here.
    """
    if fixed is not None:
        return fixed, fixed, fixed
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return 1, max(1, max_batch // 2), max_batch


class Runtime(ABC):
    """One loaded model; :meth:`load` sets ``model_id`` and the batch range the model accepts
    (``model_min_batch``/``model_max_batch``)."""

    name: str = "base"

    def __init__(self, artifact: Artifact | None = None, device: str = "cpu", threads: int = 1) -> None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        self.artifact = artifact
        self.device = device
        self.threads = threads
        self.config: ModelConfig | None = artifact.config if artifact else None
        self.meta: dict[str, str] = dict(artifact.meta) if artifact else {}
        self.model_id = ""
        self.precision = "fp32"
        self.model_min_batch = 1  # the smallest batch one call of the model takes
        self.model_max_batch: int | None = None  # the largest (None: any)

    # -- the interface ---------------------------------------------------------------------------
    @abstractmethod
    def load(self) -> None:
        """Read the model, allocate device memory; sets ``model_id`` and the batch range."""

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One call of the model on a batch inside ``model_min_batch..model_max_batch``; returns logits."""

    def close(self) -> None:
        """Release the model; the runtime is unusable afterwards."""
        return None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``(B, k, S, S) float32`` normalised windows -> ``(B, 1, S, S) float32`` logits."""
        cfg = self.config
        if cfg is None:
            raise InferenceError(f"the {self.name} runtime is not loaded")
        expected = (cfg.num_frames, cfg.input_size, cfg.input_size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ValueError(
                f"windows must be (B, {', '.join(map(str, expected))}), got {tuple(batch.shape)}"
            )
        outputs = []
        for start, stop, size in batch_pieces(batch.shape[0], self.model_min_batch, self.model_max_batch):
            piece = batch[start:stop]
            if size > stop - start:  # (n, k, S, S) -> (size, k, S, S), padded with the last window
                piece = np.concatenate([piece, np.repeat(piece[-1:], size - (stop - start), axis=0)])
            logits = self._run(np.ascontiguousarray(piece))
            if logits.shape != (size, 1, cfg.input_size, cfg.input_size):
                raise InferenceError(
                    f"the {self.name} runtime returned logits of shape {tuple(logits.shape)} for a batch "
                    f"of {size}; expected ({size}, 1, {cfg.input_size}, {cfg.input_size})"
                )
            outputs.append(logits[: stop - start])
        out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        return np.asarray(out, dtype=np.float32)

    # -- shared behaviour ------------------------------------------------------------------------
    @property
    def static_batch(self) -> int | None:
        """The one batch size the model takes, when it takes only one."""
        return self.model_min_batch if self.model_max_batch == self.model_min_batch else None

    def warmup(self, max_batch: int) -> None:
        """Run the batch sizes a batcher will form, so the first client does not pay for them."""
        cfg = self.config
        assert cfg is not None, "warmup before load"
        sizes = sorted({1, 2, max(1, max_batch // 2), max_batch})
        for b in sizes:
            self.infer(np.zeros((b, cfg.num_frames, cfg.input_size, cfg.input_size), np.float32))
        log.info("%s runtime warmed up on batch sizes %s", self.name, sizes)

    def info(self) -> dict[str, Any]:
        cfg = self.config
        assert cfg is not None, "info before load"
        return {
            "id": self.model_id,
            "preset": cfg.preset,
            "backend": self.name,
            "device": self.device,
            "precision": self.precision,
            "input_size": cfg.input_size,
            "num_frames": cfg.num_frames,
            "window": cfg.window,
            "lookahead_frames": cfg.lookahead,
            "threshold": cfg.threshold,
            "calibration": self.meta.get("echoseg.calibration", cfg.calibration),
            "static_batch": self.static_batch,
            "batch_range": [self.model_min_batch, self.model_max_batch],
        }

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
