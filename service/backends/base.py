"""The backend interface: ``load`` / ``infer(batch)`` / ``close``, in the manner of a Triton backend.

A backend owns one model on one device. ``infer`` takes a batch of windows and returns one
logit map per window; the micro-batcher is the only caller and calls it from a single worker
thread, so backends need not be thread-safe.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from training.model.config import ModelConfig

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (library missing, no GPU, wrong model file)."""


class Backend(ABC):
    """One loaded model. Subclasses set ``name``, and ``config``/``meta`` in :meth:`load`."""

    name: str = "base"

    def __init__(self, model_path: str | Path, device: str = "cpu", threads: int = 1) -> None:
        self.model_path = Path(model_path)
        self.device = device
        self.threads = threads
        self.config: ModelConfig | None = None
        self.meta: dict[str, str] = {}
        self.static_batch: int | None = None  # a model compiled for one batch size
        self.precision = "fp32"
        self.model_id = ""

    @abstractmethod
    def load(self) -> None:
        """Read the model, allocate device memory; sets ``config``, ``meta`` and ``model_id``."""

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``(B, k, S, S) float32`` normalised windows -> ``(B, 1, S, S) float32`` logits."""

    def close(self) -> None:
        """Release the model; the backend is unusable afterwards."""
        return None

    def warmup(self, max_batch: int) -> None:
        """Run the batch sizes the batcher will form, so the first client does not pay for it."""
        cfg = self.config
        assert cfg is not None, "warmup before load"
        sizes = sorted({1, 2, max(1, max_batch // 2), max_batch})
        for b in sizes:
            self.infer(np.zeros((b, cfg.num_frames, cfg.input_size, cfg.input_size), np.float32))
        log.info("%s backend warmed up on batch sizes %s", self.name, sizes)

    def info(self) -> dict:
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
        }


def file_digest(*paths: Path, length: int = 12) -> str:
    """Short SHA-256 of the given files' bytes: a stable id for a set of weights."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:length]


def make_model_id(config: ModelConfig, digest: str) -> str:
    return f"{config.preset}-{digest}"


def run_static(infer_fixed, batch: np.ndarray, size: int) -> np.ndarray:
    """Run a model compiled for batch ``size`` on any batch: split into chunks, pad the last."""
    outputs = []
    for start in range(0, batch.shape[0], size):
        chunk = batch[start : start + size]
        n = chunk.shape[0]
        if n < size:  # (n, k, S, S) -> (size, k, S, S), padded with copies of the last window
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, axis=0)], axis=0)
        outputs.append(infer_fixed(chunk)[:n])
    return np.concatenate(outputs, axis=0)
