"""Per-frame confidence and flags, the clip's quality block and why EF is null."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.quality import ClipQuality, QualityThresholds, frame_quality, gate_summary

LIMITS = QualityThresholds()


def _disc(size: int = 64, r: float = 12.0, p_in: float = 0.95) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r**2
    return np.where(inside, p_in, 0.02).astype(np.float32)


def test_a_crisp_single_cavity_is_ok():
    q = frame_quality(_disc(), signal=40.0, threshold=0.5, fan=None, limits=LIMITS)
    assert q.flag == "ok" and q.confidence == pytest.approx(0.9, abs=1e-3)


def test_blank_input_and_empty_masks_are_no_lv():
    blank = frame_quality(_disc(), signal=0.5, threshold=0.5, fan=None, limits=LIMITS)
    assert (blank.flag, blank.blank, blank.confidence) == ("no_lv", True, 0.0)
    empty = frame_quality(np.full((64, 64), 0.1, np.float32), 40.0, 0.5, None, LIMITS)
    assert (empty.flag, empty.blank) == ("no_lv", False)
    outside_fan = np.zeros((64, 64), bool)  # the mask lies where the input holds no image
    assert frame_quality(_disc(), 40.0, 0.5, outside_fan, LIMITS).flag == "no_lv"


def test_unsure_scattered_or_huge_masks_are_low_confidence():
    unsure = frame_quality(_disc(p_in=0.6), 40.0, 0.5, None, LIMITS)  # margin 0.2
    assert unsure.flag == "low_confidence" and unsure.confidence == pytest.approx(0.2, abs=1e-3)
    speckle = (np.random.default_rng(0).random((64, 64)) < 0.2).astype(np.float32) * 0.99  # many blobs
    assert frame_quality(speckle, 40.0, 0.5, None, LIMITS).flag == "low_confidence"
    half = np.zeros((64, 64), np.float32)
    half[:, :40] = 0.99  # a crisp "cavity" covering 62 % of the image: not a heart chamber
    assert frame_quality(half, 40.0, 0.5, None, LIMITS).flag == "low_confidence"


def _quality(flags: list[str], blank: int = 0) -> ClipQuality:
    from echoseg.quality import FrameQuality

    q = ClipQuality(LIMITS)
    for i, f in enumerate(flags):
        q.add(FrameQuality(0.9 if f == "ok" else 0.0, f, blank=i < blank))
    return q


SUMMARY = {"ed_frames": [1], "es_frames": [5], "beats": [{"ed": 1, "es": 5, "ef": 60.0}], "ef": 60.0}


def test_ef_is_given_when_most_frames_are_ok_and_withheld_otherwise():
    ok = gate_summary(SUMMARY, _quality(["ok"] * 9 + ["no_lv"]))
    assert ok["ef"] == 60.0 and ok["ef_null_reason"] is None and ok["ed_frames"] == [1]
    bad = gate_summary(SUMMARY, _quality(["no_lv"] * 6 + ["ok"] * 4))
    assert bad["ef"] is None and bad["ef_null_reason"] == "no_lv"
    assert bad["beats"] == [] and bad["es_frames"] == []

    def reason(summary, quality):
        return gate_summary(summary, quality)["ef_null_reason"]

    assert reason(SUMMARY, _quality(["low_confidence"] * 8 + ["ok"] * 2)) == "low_confidence"
    assert reason(SUMMARY, _quality(["no_lv"] * 10, blank=10)) == "blank_input"
    assert reason({**SUMMARY, "ef": None}, _quality(["ok"] * 10)) == "no_cardiac_cycle"
    assert reason({}, _quality([])) == "too_few_frames"


def test_the_quality_block_says_why_in_words():
    block = _quality(["no_lv"] * 3 + ["low_confidence"] + ["ok"] * 6, blank=2).block()
    assert block["frames_no_lv"] == 3 and block["frames_blank"] == 2 and block["frames_ok"] == 6
    assert block["reason"] == (
        "no left ventricle found in 3 of 10 frames, 2 of them blank (no image signal); "
        "a low-confidence left ventricle in 1 of 10 frames"
    )
    assert _quality(["ok"] * 4).block()["reason"] is None


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="min_area < max_area"):
        QualityThresholds(min_area=0.5, max_area=0.4)
    with pytest.raises(ValueError, match="min_confidence must be a non-negative number"):
        QualityThresholds(min_confidence=-1)
