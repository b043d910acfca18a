"""Say when nothing was found: a per-frame confidence and flag, and a clip's quality block.

Per frame, from what inference already has at the model's resolution (the target frame it saw
and the probabilities ``sigmoid(logits)``), inside the fan:

- ``blank``: the input carries no image (its gray-level std inside the fan is below
  ``min_signal``): an all-black or uniform frame. Flagged ``no_lv``.
- ``area``: the share of the fan the mask covers. Below ``min_area``: ``no_lv``.
- ``confidence`` = mean margin ``2p - 1`` of the mask's pixels x the share of the mask held by
  its largest connected component. A crisp single cavity scores near 1; speckle-like scattered
  blobs, or a cavity the network is unsure of, score low. Below ``min_confidence``, or a mask
  covering more than ``max_area`` of the fan (no heart cavity is that large): ``low_confidence``.

A clip's EF is given only when at most ``max_flagged_share`` of its frames are flagged; otherwise
``ef`` is null and ``ef_null_reason`` says why (:data:`EF_NULL_REASONS`).

The default thresholds were set on synthetic data only, by ``python -m benchmarks.quality_thresholds``
(``benchmarks/results/quality_thresholds.json``), refitted for the bundled model (the paper's
family trained on the A4C simulator and the scanner zoo, then fine-tuned on more zoo clips): on
192 frames of held-out A4C clips (112x112 crops, 240x320 and 480x640 scanner frames) its
confidence was 0.838-0.929 and on 192 frames of the simple generator's clips 0.898-0.933, masks
covering 4.2-22 % of the fan; on all-black, uniform gray and radial-gradient clips it set no
pixel; on noise and Rayleigh speckle it set at most 0.81 % of the fan (confidence 0) and on a
linear gradient 6.0 % (0.20); on a fan of speckle without a heart it set a cavity with
confidence 0.58-0.822. ``min_confidence`` 0.83 sits midway between that group's highest and the
echoes' lowest (a gap of 0.016); ``min_area`` 1 % sits above the noise clips' largest masks and a
quarter of the echoes' smallest (4.2 %); ``max_area`` 45 %. The service reads them from its
settings (``ECHOSEG_QUALITY_*``); refit them (same command) when the model changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from echoseg.preprocess import sigmoid

FLAGS = ("ok", "low_confidence", "no_lv")
FLAG_CODES = {name: i for i, name in enumerate(FLAGS)}  # the byte of mask_format 2 stream messages
EF_NULL_REASONS = ("blank_input", "no_lv", "low_confidence", "too_few_frames", "no_cardiac_cycle")


@dataclass(frozen=True)
class QualityThresholds:
    min_signal: float = 2.0  # gray levels of std inside the fan; below: a blank frame
    min_area: float = 0.01  # share of the fan; a smaller mask is no LV
    max_area: float = 0.45  # share of the fan; a larger mask is not a heart cavity
    min_confidence: float = 0.83
    max_flagged_share: float = 0.5  # of a clip's frames; more flagged and EF is not given

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not self.min_area < self.max_area <= 1 or self.max_flagged_share > 1:
            raise ValueError(
                "quality thresholds need min_area < max_area <= 1 and max_flagged_share <= 1, got "
                f"min_area={self.min_area}, max_area={self.max_area}, "
                f"max_flagged_share={self.max_flagged_share}"
            )


@dataclass(frozen=True)
class FrameQuality:
    confidence: float  # in [0, 1]; 0 when no LV
    flag: str  # one of FLAGS
    blank: bool = False


def frame_signal(frame: np.ndarray, fan: np.ndarray | None, mean: float, std: float) -> float:
    """Gray-level std of a normalised model-size frame ``(S, S)`` inside the fan."""
    x = frame if fan is None else frame[fan]
    return float(np.std(x)) * std * 255.0 if x.size else 0.0


def frame_quality(
    prob: np.ndarray,
    signal: float,
    threshold: float,
    fan: np.ndarray | None,
    limits: QualityThresholds,
) -> FrameQuality:
    """Confidence and flag of one frame from its ``(S, S)`` probabilities (see the module docstring)."""
    if signal < limits.min_signal:
        return FrameQuality(0.0, "no_lv", blank=True)
    mask = prob > threshold
    if fan is not None:
        mask &= fan
    fan_pixels = int(fan.sum()) if fan is not None else prob.size
    set_pixels = int(mask.sum())
    area = set_pixels / max(fan_pixels, 1)
    if area < limits.min_area:
        return FrameQuality(0.0, "no_lv")
    margin = float(np.mean(2.0 * prob[mask] - 1.0))
    labels, count = ndimage.label(mask)
    largest = int(np.bincount(labels.ravel())[1:].max()) if count else 0
    confidence = round(margin * largest / set_pixels, 4)
    low = confidence < limits.min_confidence or area > limits.max_area
    return FrameQuality(confidence, "low_confidence" if low else "ok")


def assess_frame(
    logits: np.ndarray, frame: np.ndarray, config, fan: np.ndarray | None, limits: QualityThresholds
) -> FrameQuality:
    """The flag of one frame from its ``(S, S)`` logits and the normalised frame the model saw
    (what the upload and the stream both do per frame)."""
    signal = frame_signal(frame, fan, config.mean, config.std)
    return frame_quality(sigmoid(logits.astype(np.float32)), signal, config.threshold, fan, limits)


@dataclass
class ClipQuality:
    """Running counts of a clip's (or stream's) frame flags; :meth:`block` is the JSON ``quality``."""

    limits: QualityThresholds
    frames: int = 0
    ok: int = 0
    low_confidence: int = 0
    no_lv: int = 0
    blank: int = 0
    confidence_sum: float = 0.0

    def add(self, q: FrameQuality) -> None:
        self.frames += 1
        self.confidence_sum += q.confidence
        self.blank += q.blank
        if q.flag == "ok":
            self.ok += 1
        elif q.flag == "low_confidence":
            self.low_confidence += 1
        else:
            self.no_lv += 1

    @property
    def flagged(self) -> int:
        return self.low_confidence + self.no_lv

    def ef_allowed(self) -> bool:
        return self.frames > 0 and self.flagged <= self.limits.max_flagged_share * self.frames

    def ef_null_reason(self, ef_defined: bool) -> str | None:
        """Why ``ef`` is null (one of :data:`EF_NULL_REASONS`), or None when it is given."""
        if self.frames == 0 or self.frames < 3:
            return "too_few_frames"
        if not self.ef_allowed():
            if self.blank * 2 > self.frames:
                return "blank_input"
            return "no_lv" if self.no_lv >= self.low_confidence else "low_confidence"
        return None if ef_defined else "no_cardiac_cycle"

    def reason(self) -> str | None:
        """A sentence for people when frames were flagged; None when every frame is ``ok``."""
        if self.frames == 0:
            return "no frames"
        if self.flagged == 0:
            return None
        parts = []
        if self.no_lv:
            blank = f", {self.blank} of them blank (no image signal)" if self.blank else ""
            parts.append(f"no left ventricle found in {self.no_lv} of {self.frames} frames{blank}")
        if self.low_confidence:
            parts.append(f"a low-confidence left ventricle in {self.low_confidence} of {self.frames} frames")
        return "; ".join(parts)

    def block(self) -> dict:
        return {
            "frames_ok": self.ok,
            "frames_low_confidence": self.low_confidence,
            "frames_no_lv": self.no_lv,
            "frames_blank": self.blank,
            "mean_confidence": round(self.confidence_sum / self.frames, 4) if self.frames else None,
            "reason": self.reason(),
        }


def gate_summary(summary: dict, quality: ClipQuality) -> dict:
    """A cardiac summary (``CardiacSummary.to_dict()``) with EF withheld when the clip's quality says
    so: then ``ef`` is null, ED/ES and beats are empty; ``ef_null_reason`` is always set (null when
    ``ef`` is given)."""
    out = dict(summary)
    if not quality.ef_allowed():
        out.update(ed_frames=[], es_frames=[], beats=[], ef=None)
    out["ef_null_reason"] = quality.ef_null_reason(out.get("ef") is not None)
    if out["ef_null_reason"] is not None:
        out["ef"] = None
    return out
