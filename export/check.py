"""Parity of an exported model with the torch network it came from, through the runtime layer.

Both run the same normalised windows (the torch network through
:class:`~echoseg.runtime.torch.TorchRuntime`, the export through
:class:`~echoseg.runtime.onnxruntime.OnnxRuntime`, the same code the service serves with); the check
reports the largest and the mean absolute difference of the logits and the Dice between the two
thresholded masks. An fp32 export must match within ``FP32_MAX_ABS`` on the logits; an fp16 export
(and a TensorRT engine, which may use reduced-precision kernels) must give the same masks
(``FP16_MIN_DICE``), an int8 one nearly the same (``INT8_MIN_DICE``). A mask comparison says
something only when the reference masks are neither almost empty nor almost full (an untrained
network on random frames gives such masks, and two empty masks have a Dice of 1): such comparisons
are reported as uninformative and cannot pass a mask gate, so that gate needs a trained model and
real-looking clips (``--data``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoseg.config import ModelConfig
from echoseg.preprocess import clip_windows, preprocess, random_windows
from echoseg.runtime.base import Runtime
from echoseg.runtime.onnxruntime import OnnxRuntime
from echoseg.runtime.torch import TorchRuntime
from echoseg.video import read_video

logger = logging.getLogger(__name__)

FP32_MAX_ABS = 1e-4
FP16_MIN_DICE = 0.999
INT8_MIN_DICE = 0.98  # an int8 file's masks move by a pixel here and there along the border


MIN_POSITIVE = 0.005  # a mask comparison is informative when the reference masks cover
MAX_POSITIVE = 0.995  # between 0.5 % and 99.5 % of the pixels


@dataclass
class Parity:
    """Differences between two sets of logits over ``samples`` windows."""

    source: str  # "random", "clips", "batch N"
    samples: int
    max_abs: float
    mean_abs: float
    dice: float
    positive_fraction: float  # share of mask pixels in the reference

    @property
    def informative(self) -> bool:
        """Whether the reference masks are neither almost empty nor almost full."""
        return MIN_POSITIVE <= self.positive_fraction <= MAX_POSITIVE

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "informative": self.informative}


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


def run_all(runtime: Runtime, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """``windows (N, k, S, S) -> logits (N, 1, S, S)`` through ``runtime``, ``batch_size`` at a time."""
    return np.concatenate(
        [runtime.infer(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]
    )


def torch_logits(model, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Logits of the torch network ``model`` on the CPU in fp32 (the reference of every check)."""
    with TorchRuntime(model, "cpu", threads=torch_threads()) as runtime:
        runtime.load()
        return run_all(runtime, windows, batch_size)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def clip_windows_from(root: str | Path, config: ModelConfig, max_clips: int = 4) -> np.ndarray:
    """Every window of the first ``max_clips`` videos of an EchoNet-format folder: ``(N, k, S, S)``."""
    root = Path(root)
    folder = root / "Videos" if (root / "Videos").is_dir() else root
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".avi", ".mp4"))[:max_clips]
    if not videos:
        raise ValueError(f"no .avi or .mp4 clips found in {folder}")
    # each (T, H, W) uint8 -> (T, k, S, S) float32
    return np.concatenate([clip_windows(preprocess(read_video(v)[0], config), config) for v in videos])


def passes(parities: list[Parity], precision: str) -> bool:
    """fp32: every logit difference within ``FP32_MAX_ABS``. fp16/engines (int8): the masks of every
    informative comparison agree (Dice >= ``FP16_MIN_DICE``, ``INT8_MIN_DICE``), and there is at
    least one."""
    if precision == "fp32":
        return all(p.max_abs <= FP32_MAX_ABS for p in parities)
    least = INT8_MIN_DICE if precision == "int8" else FP16_MIN_DICE
    gated = [p for p in parities if p.informative]
    return bool(gated) and all(p.dice >= least for p in gated)


def check_parity(
    onnx_path: str | Path,
    model,
    data: str | Path | None = None,
    samples: int = 8,
    max_clips: int = 4,
    seed: int = 0,
) -> tuple[list[Parity], bool]:
    """Compare an export with ``model`` on random windows and, given ``data``, on real clips.

    Returns the comparisons and whether they pass for the file's precision (see :func:`passes`).
    """
    candidate = OnnxRuntime(onnx_path, "cpu", threads=torch_threads())
    candidate.load()
    config = candidate.config
    sets = [("random", random_windows(config, samples, seed))]
    if data is not None:
        sets.append(("clips", clip_windows_from(data, config, max_clips)))
    results = []
    try:
        for source, windows in sets:
            parity = compare(
                torch_logits(model, windows), run_all(candidate, windows), config.threshold, source
            )
            logger.info("%s: %s", source, parity)
            results.append(parity)
    finally:
        candidate.close()
    return results, passes(results, candidate.precision)
