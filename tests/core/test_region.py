"""The ultrasound region: detected from a scanner-like clip, read from DICOM and checked, given by a
client; preprocessing crops to it and masks map back to the source pixels."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.region import (
    apply_region,
    choose_region,
    detect_region,
    full_region,
    map_back,
    region_from_dicom,
    region_from_json,
)
from tests.core.scanner import box_of, scanner_clip
from training.data.synthetic import synthesize


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.parametrize("shape", [(240, 320), (480, 640), (300, 300)])
def test_detects_the_fan_among_static_furniture_and_a_moving_ecg(shape):
    frames, fan, _ = scanner_clip(8, *shape)
    region = detect_region(frames)
    assert region.source == "detected"
    tolerance = max(3, shape[1] // 80)  # a few pixels: 4 at 320 wide, 8 at 640
    np.testing.assert_allclose(region.box, box_of(fan), atol=tolerance)
    found = np.zeros(shape, bool)
    found[region.y0 : region.y1, region.x0 : region.x1] = region.fan_mask
    assert dice(found, fan) > 0.95
    assert not found[: shape[0] // 20].any()  # the menu bar is outside the fan


def test_one_frame_falls_back_to_intensity():
    frames, fan, _ = scanner_clip(1)
    region = detect_region(frames)
    assert region.source == "detected"
    x0, y0, x1, y1 = box_of(fan)
    np.testing.assert_allclose(region.box[:3], (x0, y0, x1), atol=6)
    # in one frame, the ECG trace that touches the fan's bottom cannot be told from tissue
    assert y1 - 2 <= region.y1 <= y1 + 12


@pytest.mark.parametrize(
    "clip",
    [
        np.zeros((8, 112, 112), np.uint8),  # all black: nothing to find
        np.random.default_rng(0).integers(0, 256, (8, 112, 112), dtype=np.uint8),  # fills the frame
        synthesize(np.random.default_rng(0), "x", frames=8, size=112).frames,  # EchoNet-like (training data)
    ],
    ids=["black", "noise", "echonet-like"],
)
def test_full_frame_when_the_image_fills_it_or_nothing_is_found(clip):
    region = detect_region(clip)
    assert region.is_full and region.source == "full"
    np.testing.assert_array_equal(apply_region(clip, region, 112), clip)  # passes through unchanged


@pytest.mark.parametrize("shape", [(240, 320), (480, 640)])
def test_apply_region_crops_blanks_pads_and_map_back_inverts_it(shape):
    frames, fan, cavity = scanner_clip(6, *shape)
    region = detect_region(frames)
    size = 112  # the model's input: a 480x640 frame's fan is shrunk about 4x and brought back
    model_in = apply_region(frames, region, size)
    assert model_in.shape == (6, size, size)
    # the ECG trace and the text were blanked: only fan pixels reach the model
    side = max(region.x1 - region.x0, region.y1 - region.y0)
    top = (side - (region.y1 - region.y0)) // 2
    assert model_in[:, : max(0, top * size // side - 1)].max() == 0  # the padding above the box is black
    # a mask pushed through the same crop and brought back lands on the same pixels
    as_image = (cavity * 255).astype(np.uint8)
    prob = apply_region(as_image, region, size).astype(np.float32) / 255.0
    back = map_back(prob, region) > 0.5
    assert back.shape == cavity.shape
    for t in range(len(cavity)):
        assert dice(back[t], cavity[t]) > 0.95
    assert not back[:, ~fan].any() or back[:, ~fan].mean() < 1e-4


def test_full_region_is_the_plain_resize():
    frames = np.random.default_rng(1).integers(0, 256, (3, 48, 40), dtype=np.uint8)
    from echoseg.resize import resize_frames, resize_probabilities

    region = full_region(48, 40)
    np.testing.assert_array_equal(apply_region(frames, region, 32), resize_frames(frames, 32))
    prob = np.random.default_rng(2).random((3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(map_back(prob, region), resize_probabilities(prob, 48, 40))


class _Item:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _ds(*regions, rows=240, cols=320):
    return _Item(SequenceOfUltrasoundRegions=list(regions), Rows=rows, Columns=cols)


def _region(x0, y0, x1, y1, spatial=1, data_type=1):
    return _Item(
        RegionSpatialFormat=spatial, RegionDataType=data_type, RegionLocationMinX0=x0, RegionLocationMinY0=y0,
        RegionLocationMaxX1=x1, RegionLocationMaxY1=y1,
    )  # fmt: skip


def test_dicom_region_is_the_largest_2d_tissue_region():
    ds = _ds(_region(10, 10, 60, 60), _region(40, 20, 279, 219), _region(0, 0, 319, 239, spatial=3))  # M-mode
    found = region_from_dicom(ds, (240, 320))
    assert found.index == 1 and found.warnings == []
    assert found.region.box == (40, 20, 280, 220) and found.region.source == "dicom"  # MaxX1/Y1 inclusive


def test_dicom_region_outside_the_matrix_is_refused_as_stale():
    ds = _ds(_region(80, 40, 559, 439))  # coordinates of a 640x480 original, pixels resampled to 320x240
    found = region_from_dicom(ds, (240, 320))
    assert found.region is None and found.refused == [0]
    assert "outside the 320x240 pixel matrix" in found.warnings[0]


def test_dicom_region_over_a_frame_the_image_fills_is_the_full_frame():
    clip = synthesize(np.random.default_rng(0), "x", frames=8, size=112).frames
    declared = region_from_dicom(_ds(_region(1, 1, 110, 110), rows=112, cols=112), (112, 112)).region
    region, warnings, stale = choose_region(clip, declared)
    assert region.is_full and not stale and warnings == []


def test_dicom_region_with_a_broken_location_is_refused_naming_the_field():
    found = region_from_dicom(_ds(_region(10, 10, "wide", 60)), (240, 320))
    assert found.region is None and found.refused == [0]
    assert found.warnings == ["ultrasound region 0 has no valid RegionLocationMaxX1; ignored"]


def test_dicom_region_that_misses_the_image_is_refused_by_content():
    frames, fan, _ = scanner_clip(8)
    good = region_from_dicom(
        _ds(_region(*box_of(fan)[:2], box_of(fan)[2] - 1, box_of(fan)[3] - 1)), (240, 320)
    )
    region, warnings, stale = choose_region(frames, good.region)
    assert region.source == "dicom" and not stale and warnings == []
    assert region.box == box_of(fan) and region.fan is not None  # the fan found inside the declared box
    elsewhere = region_from_dicom(_ds(_region(0, 0, 80, 60)), (240, 320))  # in range but not the image
    region, warnings, stale = choose_region(frames, elsewhere.region)
    assert stale and region.source == "detected" and "stale" in warnings[0]


def test_client_region_is_validated_field_by_field():
    region = region_from_json(
        {"x0": 10, "y0": 5, "x1": 110, "y1": 95, "fan": [[60, 5], [10, 94], [109, 94]]}, 100, 120
    )
    assert region.source == "client" and region.box == (10, 5, 110, 95) and region.fan_mask.shape == (90, 100)
    again = region_from_json(region.to_dict(), 100, 120)  # a region from a response can be sent back
    assert (again.box, again.fan) == (region.box, region.fan)
    for bad, words in (
        ([1, 2, 3, 4], "must be an object"),
        ({"x0": 0, "y0": 0, "x1": 121, "y1": 50}, "region.x1 = 121 is outside"),
        ({"x0": 0, "y0": 0, "x1": "50", "y1": 50}, "region.x1 must be an integer"),
        ({"x0": 40, "y0": 0, "x1": 20, "y1": 50}, "at least 8 pixels"),
        ({"x0": 0, "y0": 0, "x1": 50, "y1": 50, "fan": [[1, 1]]}, "region.fan must be a list"),
        ({"x0": 0, "y0": 0, "x1": 50, "y1": 50, "fan": [[1, 1], [2, 2], [90, 3]]}, "region.fan[2]"),
    ):
        with pytest.raises(ValueError, match=words.replace("[", r"\[")):
            region_from_json(bad, 100, 120)


def test_detection_is_cheap():
    import time

    frames, _, _ = scanner_clip(8, 480, 640)
    started = time.perf_counter()
    detect_region(frames)
    assert time.perf_counter() - started < 0.5  # once per clip or stream; typically ~20 ms


def test_training_windows_use_the_same_region_as_the_service():
    """A scanner-like clip in the training dataset: the frames the model learns from are the ones
    the service would feed it, and the traced mask lands on the same pixels."""
    from echoseg.config import ModelConfig
    from echoseg.preprocess import normalize, preprocess, resize_frames
    from training.data.clip import Clip
    from training.data.dataset import ClipWindowDataset

    frames, _, cavity = scanner_clip(8)
    config = ModelConfig(num_frames=3, depth=3, calibrated_levels=(), input_size=64)
    clip = Clip("scanner", frames, fps=25.0, ef=50.0, split="TRAIN", traced={4: cavity[4]}, ed=4, es=4)
    dataset = ClipWindowDataset([clip], config)
    item = dataset[0]
    region = choose_region(frames)[0]
    assert region.source == "detected"
    np.testing.assert_allclose(item["frames"].numpy()[1], preprocess(frames[4:5], config, region)[0])
    back = map_back(item["mask"].numpy().astype(np.float32), region)[0] > 0.5
    assert dice(back, cavity[4]) > 0.9
    # an EchoNet-like clip is read exactly as before: a plain resize
    echo = synthesize(np.random.default_rng(5), "e", frames=8, size=112).frames
    plain = ClipWindowDataset([Clip("e", echo, 25.0, 50.0, "TRAIN", traced={3: echo[3] > 100})], config)
    expected = normalize(resize_frames(echo[2:5], 64), config)
    np.testing.assert_array_equal(plain[0]["frames"].numpy(), expected)
