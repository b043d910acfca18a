"""Let the model judge between candidate regions: never worse than the whole frame.

The rule of :mod:`echoseg.region` picks a region from a clip's first frames (declared, rescaled
or detected), but a rule that thresholds pixels can hand the model half a fan. So where the
candidates disagree (:func:`echoseg.region.region_candidates`: the rule's choice, the declared or
rescaled region it passed over, the detected region, the full frame; at most
:data:`MAX_CANDIDATES`), each is run through the model on the first window and judged by the
quality signal of :mod:`echoseg.quality` (flag, then confidence). The rule's choice stays unless
another candidate is clearly better: a better flag, or the same flag and a confidence higher by
:data:`MARGIN` (so that noise between two near-equal regions does not flip the choice).

The cost is bounded: one window per candidate, one batch, once per clip or stream, and nothing
at all when the candidates agree. The rule is here, free of torch and of the service: the caller
supplies the model as ``infer`` (``(n, k, S, S)`` windows -> ``(n, S, S)`` logits) through
:func:`window_scorer`, or any other scoring callback, so evaluation can use it as the service does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from echoseg.config import ModelConfig
from echoseg.preprocess import preprocess, window_indices
from echoseg.quality import FrameQuality, QualityThresholds, assess_frame
from echoseg.region import Region, RegionChoice, input_fan

MAX_CANDIDATES = 4
MARGIN = 0.05  # confidence a challenger with the same flag must gain over the rule's choice
FLAG_RANK = {"ok": 2, "low_confidence": 1, "no_lv": 0}
DESCRIPTIONS = {
    "dicom": "DICOM",
    "dicom_rescaled": "rescaled DICOM",
    "detected": "detected",
    "client": "client's",
    "full": "whole-frame",
}

Scorer = Callable[[Sequence[Region]], Sequence[FrameQuality]]


def first_frames(lookahead: int, limit: int) -> int:
    """How many of a clip's first frames the region is chosen from, for uploads and streams alike:
    those the first window needs (target 0 and its look-ahead), at most ``limit``. A stream holds
    no frame its first mask does not need, so a client that waits for each mask never waits on the
    region; an upload uses the same frames so that both reach the same region."""
    return max(1, min(limit, lookahead + 1))


def window_scorer(
    frames: np.ndarray,
    config: ModelConfig,
    infer: Callable[[np.ndarray], np.ndarray],
    limits: QualityThresholds,
) -> Scorer:
    """A scoring callback: each region's first window of ``frames`` ``(n, H, W) uint8`` through
    ``infer`` in one call, judged as every served frame is (:func:`echoseg.quality.assess_frame`)."""
    idx = window_indices(0, frames.shape[0], config)
    target = config.offsets.index(0)

    def score(regions: Sequence[Region]) -> list[FrameQuality]:
        # (n, H, W) -> per region (k, S, S) -> (m, k, S, S)
        windows = np.stack([preprocess(frames, config, r)[idx] for r in regions])
        logits = np.asarray(infer(windows))  # (m, k, S, S) -> (m, S, S)
        if logits.shape[0] != len(regions):
            raise ValueError(f"infer returned {logits.shape[0]} results for {len(regions)} windows")
        return [
            assess_frame(lg, w[target], config, input_fan(r, config.input_size), limits)
            for lg, w, r in zip(logits, windows, regions, strict=True)
        ]

    return score


def better(challenger: FrameQuality, incumbent: FrameQuality, margin: float = MARGIN) -> bool:
    """A better flag, or the same flag and a confidence higher by ``margin``."""
    a, b = FLAG_RANK[challenger.flag], FLAG_RANK[incumbent.flag]
    return a > b or (a == b and challenger.confidence > incumbent.confidence + margin)


def arbitrate(choice: RegionChoice, score: Scorer | None) -> tuple[Region, list[str]]:
    """The region to use and what to tell the client: the rule's choice unless the model, given
    the candidates (the first :data:`MAX_CANDIDATES`), judges another clearly better."""
    candidates = choice.candidates[:MAX_CANDIDATES]
    if score is None or len(candidates) < 2:
        return choice.region, []
    qualities = list(score(candidates))
    best = 0
    for i in range(1, len(candidates)):
        if better(qualities[i], qualities[best]):
            best = i
    if best == 0:
        return choice.region, []
    won, lost = qualities[best], qualities[0]
    what = DESCRIPTIONS[candidates[best].source]
    return candidates[best], [
        f"the {what} region was used: on the first frames the model found the left ventricle there "
        f"({won.flag}, confidence {won.confidence:.2f}) more clearly than in the "
        f"{DESCRIPTIONS[choice.region.source]} region ({lost.flag}, confidence {lost.confidence:.2f})"
    ]
