"""The model's judgement between candidate regions, and the repair of stale DICOM regions."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.arbitration import MARGIN, MAX_CANDIDATES, arbitrate, first_frames, window_scorer
from echoseg.config import ModelConfig
from echoseg.quality import FrameQuality, QualityThresholds
from echoseg.region import (
    Region,
    RegionChoice,
    StaleRegion,
    full_region,
    region_candidates,
    region_from_dicom,
    rescale_stale,
)
from tests.core.scanner import box_of, scanner_clip

from .test_region import _ds, _region


def _choice(n: int) -> RegionChoice:
    regions = [Region(10 * i, 0, 100 + 10 * i, 100, 200, 300, "detected") for i in range(n - 1)]
    regions.append(full_region(200, 300))
    return RegionChoice(regions[0], [], False, None, tuple(regions))


def _scorer(qualities):
    calls = []

    def score(regions):
        calls.append(len(regions))
        return qualities[: len(regions)]

    return score, calls


@pytest.mark.parametrize(
    "challenger,wins",
    [
        (FrameQuality(0.85 + MARGIN / 2, "ok"), False),  # within the margin: the rule's choice stays
        (FrameQuality(0.85 + 2 * MARGIN, "ok"), True),
        (FrameQuality(0.95, "low_confidence"), False),  # a worse flag never wins
    ],
)
def test_the_rules_choice_stays_unless_another_is_clearly_better(challenger, wins):
    choice = _choice(2)
    score, calls = _scorer([FrameQuality(0.85, "ok"), challenger])
    region, warnings = arbitrate(choice, score)
    assert calls == [2]
    assert region is (choice.candidates[1] if wins else choice.region)
    assert bool(warnings) == wins
    if wins:
        assert "whole-frame region was used" in warnings[0] and "detected region" in warnings[0]


def test_a_better_flag_wins_and_the_cost_is_bounded():
    choice = _choice(6)
    low = FrameQuality(0.9, "low_confidence")
    score, calls = _scorer([low, low, FrameQuality(0.5, "no_lv"), FrameQuality(0.8, "ok"), low, low])
    region, _ = arbitrate(choice, score)
    assert calls == [MAX_CANDIDATES] and region is choice.candidates[3]


def test_one_candidate_or_no_scorer_costs_nothing():
    score, calls = _scorer([FrameQuality(0.1, "no_lv")])
    assert arbitrate(_choice(1), score) == (_choice(1).region, []) and calls == []
    assert arbitrate(_choice(3), None)[0] == _choice(3).region


def test_window_scorer_runs_every_candidate_in_one_call_on_the_first_window():
    config = ModelConfig(num_frames=3, depth=3, calibrated_levels=(), input_size=32)
    frames, _, _ = scanner_clip(2, 240, 320)
    calls = []

    def infer(windows):
        calls.append(windows.shape)
        return 4.0 * windows[:, 1]  # (m, k, S, S) -> (m, S, S): the target frame, bright is "LV"

    regions = region_candidates(frames).candidates
    qualities = window_scorer(frames, config, infer, QualityThresholds())(regions)
    assert calls == [(len(regions), 3, 32, 32)] and len(qualities) == len(regions)
    assert first_frames(config.lookahead, 8) == 2 and first_frames(0, 8) == 1 and first_frames(5, 4) == 4


def test_a_stale_region_is_rescaled_by_the_factor_that_fits_the_content():
    frames, fan, _ = scanner_clip(8, 240, 320)
    x0, y0, x1, y1 = box_of(fan)
    original = (2 * x0, 2 * y0, 2 * x1 - 1, 2 * y1 - 1)  # the region of the 640x480 original, inclusive
    found = region_from_dicom(_ds(_region(*original)), (240, 320))
    assert found.region is None and found.stale == StaleRegion(0, (2 * x0, 2 * y0, 2 * x1, 2 * y1))
    assert next(f for f, _ in rescale_stale(found.stale, 240, 320)) == 0.5  # larger factors do not fit
    choice = region_candidates(frames, stale=found.stale)
    assert choice.scale == 0.5 and not choice.stale and choice.region.source == "dicom_rescaled"
    np.testing.assert_allclose(choice.region.box, box_of(fan), atol=1)
    assert choice.region.fan is not None and "rescaled by 0.5" in choice.warnings[0]


def test_a_stale_region_no_factor_brings_onto_the_image_stays_refused():
    frames, _, _ = scanner_clip(8, 240, 320)
    found = region_from_dicom(_ds(_region(500, 300, 900, 700)), (240, 320))  # far off at every factor
    choice = region_candidates(frames, stale=found.stale)
    assert choice.stale and choice.scale is None and choice.region.source == "detected"
    assert any("at no simple factor" in w for w in choice.warnings), choice.warnings


def test_a_stale_region_without_image_to_confirm_it_is_a_candidate_only():
    """Nothing in the frames to check a factor against: the largest fitting factor's box is offered
    to the model's judgement, but the spacing is not rescaled (the factor is unconfirmed)."""
    frames = np.zeros((4, 240, 320), np.uint8)
    found = region_from_dicom(_ds(_region(80, 40, 559, 439)), (240, 320))
    choice = region_candidates(frames, stale=found.stale)
    assert choice.stale and choice.scale is None and choice.region.is_full
    assert [c.source for c in choice.candidates] == ["full", "dicom_rescaled"]
    assert any("no image found" in w for w in choice.warnings), choice.warnings
