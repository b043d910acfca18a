"""The fan finder on every layout of the scanner zoo: the detected fan is the true one (IoU) from
a clip's first frames and from a stream's first window, and the fit quality is reported."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.region import Region, detect_region
from training.data.zoo import LAYOUT_NAMES, render_zoo_clip

SEED = 31  # a zoo clip the finder was not tuned on (benchmarks/zoo.py scores its own held-out seeds)


def fan_area(region: Region) -> np.ndarray:
    out = np.zeros((region.height, region.width), bool)
    mask = region.fan_mask
    out[region.y0 : region.y1, region.x0 : region.x1] = True if mask is None else mask
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module", params=LAYOUT_NAMES)
def clip(request):
    return render_zoo_clip(request.param, SEED, frames=8)


def test_the_fan_is_found_from_the_first_frames_and_from_a_streams_first_window(clip):
    for frames in (clip.frames, clip.frames[:2]):  # a clip's first frames; a stream's first window
        region = detect_region(frames)
        assert region.source == "detected", (clip.layout, len(frames), region.notes)
        assert iou(fan_area(region), clip.fan) >= 0.90, (clip.layout, len(frames))
        assert region.fit_quality is not None and 0.0 < region.fit_quality <= 1.0


# More clips of the layouts where the fit is hardest (seeds below the benchmark's held-out ones,
# fixed here): a linear array's rectangle with dark chambers against its sides, and dim clips
# whose fan (mean gray 4-9) is black but for the tissue next to the transducer and the walls.
MORE_SEEDS = (16, 17, 19, 23, 27)


@pytest.mark.parametrize("seed", MORE_SEEDS)
def test_a_linear_arrays_rectangle_is_found_on_more_clips(seed):
    clip = render_zoo_clip("linear", seed, frames=8)
    for frames in (clip.frames, clip.frames[:2]):
        region = detect_region(frames)
        assert iou(fan_area(region), clip.fan) >= 0.90, (seed, len(frames), region.box)


@pytest.mark.parametrize("seed", MORE_SEEDS)
def test_a_dim_clips_fan_is_found_on_more_clips(seed):
    """The dim fan is found from the bright tissue next to the transducer and the heart's walls.
    Its sides are black in every frame, so the fan is inferred, not seen: from 8 frames it holds
    at 0.85 on these clips (0.87-0.91; 0.58-0.75 before the dim clip's own fit), from a stream's
    2-frame window at 0.70 (0.73-0.91), short of the 0.90 the other layouts reach."""
    clip = render_zoo_clip("dim", seed, frames=8)
    assert iou(fan_area(detect_region(clip.frames)), clip.fan) >= 0.85, seed
    assert iou(fan_area(detect_region(clip.frames[:2])), clip.fan) >= 0.70, seed


def test_a_dim_clip_lit_in_patches_is_found():
    """At the lowest gain (fan mean gray 5.6) only the apex and the annulus move above the black:
    no single live piece is large enough for a fan, and the finder used to give up and return the
    whole 640x480 screen (Dice 0.70 / 0.41 at ED / ES with the bundled model). The pieces together
    are the dim clip's sector. (A zoo development seed: neither trained on nor held out.)"""
    clip = render_zoo_clip("dim", 7_100_008, frames=8)
    assert float(clip.frames[:, clip.fan].mean()) < 8.0
    for frames in (clip.frames, clip.frames[:2]):
        region = detect_region(frames)
        assert region.source == "detected", region.notes
        assert iou(fan_area(region), clip.fan) >= 0.85, len(frames)
        assert region.notes  # a poor fit is said


def test_scattered_text_alone_is_no_dim_fan():
    """Moving blips in a few corners of a black screen (a cursor, a clock) are not a fan."""
    rng = np.random.default_rng(1)
    frames = np.zeros((8, 240, 320), np.uint8)
    for y, x in ((10, 10), (10, 290), (220, 10), (220, 290)):
        frames[:, y : y + 12, x : x + 20] = rng.integers(0, 255, (8, 12, 20))
    assert detect_region(frames).source == "full"


@pytest.mark.parametrize("name", ["standard", "sepia", "linear"])
def test_one_frame_gives_a_fan(name):
    clip = render_zoo_clip(name, SEED, frames=4)
    region = detect_region(clip.frames[:1])
    assert region.source == "detected"
    assert iou(fan_area(region), clip.fan) >= 0.80, name


def test_a_poor_fit_is_said_in_the_notes():
    """Moving speckle in an L-shaped area is no fan a scanner draws: the region says so."""
    rng = np.random.default_rng(0)
    shape = np.zeros((240, 320), bool)
    shape[20:220, 20:80] = True
    shape[160:220, 20:300] = True
    frames = (rng.rayleigh(50.0, (4, 240, 320)) * shape).clip(0, 255).astype(np.uint8)
    region = detect_region(frames)
    assert region.source == "detected" and region.fit_quality < 0.8
    assert any("fits a scanner's fan poorly" in n for n in region.notes), region.notes
