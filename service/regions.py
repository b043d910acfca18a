"""The region of an upload or a stream: the rule's candidates, judged by the served model.

Uploads and streams both call :func:`choose_region_judged` from a worker thread, on the same
first frames (``echoseg.arbitration.first_frames``), so the same clip reaches the same region
either way. Where the candidates disagree, their first windows go through the micro-batcher
(one batch, on its worker thread) and :func:`echoseg.arbitration.arbitrate` keeps the rule's
choice unless the model finds the left ventricle clearly better in another candidate.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from echoseg.arbitration import arbitrate, window_scorer
from echoseg.region import Region, RegionChoice, StaleRegion, region_candidates
from service.batcher import MicroBatcher
from service.core.config import Settings

log = logging.getLogger(__name__)

JUDGE_TIMEOUT_S = 30.0  # for the candidates' batch; past it the rule's choice stands


def choose_region_judged(
    first: np.ndarray,
    declared: Region | None,
    stale: StaleRegion | None,
    batcher: MicroBatcher,
    loop: asyncio.AbstractEventLoop,
    settings: Settings,
    realtime: bool,
) -> tuple[RegionChoice, Region, list[str]]:
    """``(the rule's choice, the region to use, warnings)`` for a clip's first frames ``(n, H, W)``.

    Runs in a worker thread (never on ``loop``); ``realtime``: the windows are a stream's."""
    choice = region_candidates(first, declared, stale)
    if not settings.region_arbitration or len(choice.candidates) < 2:
        return choice, choice.region, list(choice.warnings)

    def infer(windows: np.ndarray) -> np.ndarray:
        return batcher.infer_from_thread(windows, loop, realtime, JUDGE_TIMEOUT_S)

    score = window_scorer(first, batcher.backend.config, infer, settings.quality_thresholds)
    try:
        region, notes = arbitrate(choice, score)
    except TimeoutError:
        log.warning("the model did not judge the region candidates within %g s", JUDGE_TIMEOUT_S)
        region, notes = (
            choice.region,
            ["the model could not judge the region in time; the rule's region is used"],
        )
    return choice, region, [*choice.warnings, *notes]
