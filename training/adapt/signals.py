"""Label-free signals of how well a model reads a site's clips (no tracing needed).

A site adapting a model has no labels on its clips, so it judges the model by what the service
itself says about each frame and by what any heart does:

- ``no_lv_share`` / ``low_confidence_share``: the share of frames the service's quality flags
  (``echoseg.quality``: the same thresholds, the same per-frame rule as REST and streaming) mark
  ``no_lv`` or ``low_confidence``; ``flagged_share`` both together;
- ``mean_confidence``: the flags' confidence (mask margin x share of the largest component);
- ``temporal_dice``: Dice between the masks of neighbouring frames (a cavity changes little in
  1/30 s; a model unsure of the picture flickers);
- ``periodicity``: the share of the area curve's variance at cardiac frequencies (up to 4 Hz: a
  beat and its first harmonics); a beating heart's area changes smoothly with the beat, a confused
  model's flickers from frame to frame.

Frames are read as the service reads them: the clip's ultrasound region (``echoseg.region``), the
model's preprocessing and windows, masks and flags at the model's resolution inside the fan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from echoseg.preprocess import clip_windows, preprocess
from echoseg.quality import QualityThresholds, assess_frame
from echoseg.region import DETECT_FRAMES, choose_region, input_fan
from training.metrics import dice
from training.model.inference import window_logits

SIGNALS = (
    "no_lv_share",
    "low_confidence_share",
    "flagged_share",
    "mean_confidence",
    "temporal_dice",
    "periodicity",
)
MAX_CARDIAC_HZ = 4.0  # a beat and its first harmonics


@dataclass
class ClipSignals:
    frames: int
    no_lv_share: float
    low_confidence_share: float
    flagged_share: float
    mean_confidence: float
    temporal_dice: float
    periodicity: float


@torch.no_grad()
def clip_logits(model, frames: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray, object]:
    """``(T, H, W) uint8`` -> the model's ``(T, S, S)`` logits, the ``(T, S, S)`` normalised target
    frames it saw and the clip's region (detected from its first frames, as for a clip without a
    DICOM region)."""
    config = model.config
    region = choose_region(frames[:DETECT_FRAMES])[0]
    seen = preprocess(frames, config, region)  # (T, S, S) float32
    return window_logits(model, clip_windows(seen, config), batch_size), seen, region


def periodicity(areas: np.ndarray, fps: float) -> float:
    """The share of the ``(T,)`` area curve's variance at cardiac frequencies (up to
    :data:`MAX_CARDIAC_HZ`): near 1 for a beating cavity, low for a curve that flickers from frame to
    frame (0 for a flat curve). Works on clips shorter than a beat, where an autocorrelation cannot."""
    x = np.asarray(areas, np.float64)
    if len(x) < 4:
        return 0.0
    x = x - x.mean()
    power = np.abs(np.fft.rfft(x)) ** 2
    freq = np.fft.rfftfreq(len(x), 1.0 / fps)
    total = float(power[freq > 0].sum())
    if total <= 1e-12 * max(float((np.asarray(areas, np.float64) ** 2).sum()), 1.0):
        return 0.0
    return float(power[(freq > 0) & (freq <= MAX_CARDIAC_HZ)].sum() / total)


def clip_signals(model, frames: np.ndarray, fps: float, limits: QualityThresholds) -> ClipSignals:
    """The signals of one clip (see the module docstring)."""
    config = model.config
    logits, seen, region = clip_logits(model, frames)
    fan = input_fan(region, config.input_size)
    qualities = [assess_frame(logits[t], seen[t], config, fan, limits) for t in range(len(logits))]
    masks = logits > np.log(config.threshold / (1.0 - config.threshold))  # p > threshold
    if fan is not None:
        masks &= fan
    areas = masks.reshape(len(masks), -1).sum(1)
    n = len(qualities)
    no_lv = sum(q.flag == "no_lv" for q in qualities) / n
    low = sum(q.flag == "low_confidence" for q in qualities) / n
    return ClipSignals(
        frames=n,
        no_lv_share=no_lv,
        low_confidence_share=low,
        flagged_share=no_lv + low,
        mean_confidence=float(np.mean([q.confidence for q in qualities])),
        temporal_dice=float(np.mean([dice(masks[t], masks[t + 1]) for t in range(n - 1)])) if n > 1 else 1.0,
        periodicity=periodicity(areas, fps),
    )


def summarize(per_clip: Iterable[ClipSignals]) -> dict:
    """The mean of each signal over clips (each clip weighs the same), with the clip count."""
    rows = [asdict(s) for s in per_clip]
    out: dict = {"clips": len(rows)}
    for name in SIGNALS:
        out[name] = round(float(np.mean([r[name] for r in rows])), 4) if rows else None
    return out
