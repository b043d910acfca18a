"""Parity of an exported ``.onnx`` with the torch network it came from.

Both run the same normalised windows; the check reports the largest and the mean absolute
difference of the logits and the Dice between the two thresholded masks. An fp32 export must
match within ``FP32_MAX_ABS`` on the logits; an fp16 export must give the same masks
(``FP16_MIN_DICE``), since its logits differ by fp16 rounding.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.model.config import ModelConfig

logger = logging.getLogger(__name__)

FP32_MAX_ABS = 1e-4
FP16_MIN_DICE = 0.999


@dataclass
class Parity:
    """Differences between two sets of logits over ``samples`` windows."""

    source: str  # "random" or "clips"
    samples: int
    max_abs: float
    mean_abs: float
    dice: float
    positive_fraction: float  # share of mask pixels in the reference (a Dice of empty masks says little)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks of any shape; 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def logit_threshold(threshold: float) -> float:
    """``sigmoid(x) > threshold`` is ``x > logit(threshold)``."""
    return math.log(threshold / (1.0 - threshold))


def compare(reference: np.ndarray, candidate: np.ndarray, threshold: float, source: str) -> Parity:
    reference = reference.astype(np.float32)
    candidate = candidate.astype(np.float32)
    diff = np.abs(reference - candidate)
    cut = logit_threshold(threshold)
    ref_mask = reference > cut
    return Parity(
        source=source,
        samples=int(reference.shape[0]),
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        dice=dice(ref_mask, candidate > cut),
        positive_fraction=float(ref_mask.mean()),
    )


class OnnxRunner:
    """ONNX Runtime session over an EchoSeg export: float32 windows in, float32 logits out.

    A fixed-batch export (the ``conv`` form) is fed in chunks of its batch, the last one padded
    by repeating its final window.
    """

    def __init__(
        self, path: str | Path, providers: list[str] | None = None, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(path), options, providers=providers or ["CPUExecutionProvider"]
        )
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        self.dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
        self.batch = spec.shape[0] if isinstance(spec.shape[0], int) else None

    def __call__(self, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """``windows (N, k, S, S) float32 -> logits (N, 1, S, S) float32``."""
        step = self.batch or batch_size
        out = []
        for i in range(0, len(windows), step):
            chunk = windows[i : i + step]
            n = len(chunk)
            if self.batch and n < self.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - n, axis=0)])
            logits = self.session.run(None, {self.input_name: chunk.astype(self.dtype)})[0]
            out.append(logits[:n].astype(np.float32))
        return np.concatenate(out)


def torch_logits(model, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """``windows (N, k, S, S) float32 -> logits (N, 1, S, S) float32`` with the torch network on CPU."""
    import torch

    model = model.eval()
    with torch.no_grad():
        return np.concatenate(
            [
                model(torch.from_numpy(np.ascontiguousarray(windows[i : i + batch_size]))).numpy()
                for i in range(0, len(windows), batch_size)
            ]
        )


def random_windows(config: ModelConfig, count: int, seed: int = 0) -> np.ndarray:
    """Random uint8 frames, normalised like real ones: ``(count, k, S, S) float32``."""
    from training.model.preprocessing import normalize

    rng = np.random.default_rng(seed)
    size = config.input_size
    frames = rng.integers(0, 256, size=(count, config.num_frames, size, size), dtype=np.uint8)
    return normalize(frames, config)


def clip_windows_from(root: str | Path, config: ModelConfig, max_clips: int = 4) -> np.ndarray:
    """Every window of the first ``max_clips`` clips of an EchoNet-format folder: ``(N, k, S, S)``."""
    from training.data.echonet import load_clips
    from training.model.preprocessing import normalize, resize_frames
    from training.model.window import clip_windows

    clips = load_clips(root)[:max_clips]
    if not clips:
        raise ValueError(f"no clips found in {root}")
    # each (T, H, W) uint8 -> (T, k, S, S) float32
    return np.concatenate(
        [clip_windows(normalize(resize_frames(c.frames, config.input_size), config), config) for c in clips]
    )


def passes(parity: Parity, precision: str) -> bool:
    if precision == "fp16":
        return parity.dice >= FP16_MIN_DICE
    return parity.max_abs <= FP32_MAX_ABS


def check_parity(
    onnx_path: str | Path,
    model,
    data: str | Path | None = None,
    samples: int = 8,
    max_clips: int = 4,
    seed: int = 0,
) -> tuple[list[Parity], bool]:
    """Compare an export with ``model`` on random windows and, given ``data``, on real clips.

    Returns the comparisons and whether all of them are within tolerance for the file's precision.
    """
    from export.onnx import read_metadata

    config, props = read_metadata(onnx_path)
    precision = props["echoseg.precision"]
    runner = OnnxRunner(onnx_path)
    sets = [("random", random_windows(config, samples, seed))]
    if data is not None:
        sets.append(("clips", clip_windows_from(data, config, max_clips)))
    results = []
    for source, windows in sets:
        parity = compare(torch_logits(model, windows), runner(windows), config.threshold, source)
        logger.info("%s: %s", source, parity)
        results.append(parity)
    return results, all(passes(p, precision) for p in results)
