"""The readout of the model's logits, one for uploads (``service.segment``) and streams
(``service.stream``): each frame's mask at the clip's size and its quality flag, and the clip's
cardiac summary from its area curve, with EF withheld (and why) when too many frames are flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from echoseg.cardiac import summarize_areas
from echoseg.config import ModelConfig
from echoseg.preprocess import logits_to_masks
from echoseg.quality import ClipQuality, FrameQuality, QualityThresholds, assess_frame, gate_summary
from echoseg.region import Region, input_fan


@dataclass(frozen=True)
class Readout:
    """Reads one clip's frames: the model's config, the region its frames were cropped to (None:
    the whole frame) and the quality thresholds."""

    config: ModelConfig
    limits: QualityThresholds
    region: Region | None = None
    fan: np.ndarray | None = None  # (S, S) bool: where the model's input holds image

    @classmethod
    def within(cls, region: Region | None, config: ModelConfig, limits: QualityThresholds) -> Readout:
        return cls(config, limits, region, input_fan(region, config.input_size))

    def mask(self, logits: np.ndarray, height: int, width: int) -> np.ndarray:
        """``(S, S)`` logits -> ``(height, width)`` uint8 {0, 1} mask, mapped back from the region."""
        return logits_to_masks(logits[None], height, width, self.config, self.region)[0]

    def quality(self, logits: np.ndarray, seen: np.ndarray) -> FrameQuality:
        """The flag and confidence of ``(S, S)`` logits for the ``(S, S)`` input frame they are of."""
        return assess_frame(logits, seen, self.config, self.fan, self.limits)


def gated_summary(
    areas: np.ndarray,
    mask_at: Callable[[int], np.ndarray],
    qualities: Iterable[FrameQuality],
    limits: QualityThresholds,
    spacing: tuple[float, float] = (1.0, 1.0),
    fps: float | None = None,
) -> tuple[dict, ClipQuality]:
    """The cardiac summary of the ``(T,)`` area curve (``mask_at(i)`` fetches the masks whose volume
    enters EF) gated by the frames' flags, and the clip's quality."""
    summary = summarize_areas(areas, mask_at, spacing, fps).to_dict()
    quality = ClipQuality(limits)
    for q in qualities:
        quality.add(q)
    return gate_summary(summary, quality), quality
