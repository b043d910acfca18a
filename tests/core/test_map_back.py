"""Masks brought back to the source frame in 8 bits at the mask's own size, against the float
resize of the probabilities it replaced (kept as the reference: ``map_back`` + threshold)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from echoseg.config import ModelConfig
from echoseg.preprocess import logits_to_masks
from echoseg.region import Region, full_region, map_back, map_back_masks
from echoseg.resize import resize_probabilities, resized_masks
from tests.core.scanner import scanner_clip

NEAR = 2.0 / 255.0  # 8-bit probabilities may decide pixels this close to the threshold otherwise


def smooth_probabilities(count: int, size: int, seed: int) -> np.ndarray:
    """``(T, S, S)`` probabilities with large regions on both sides of 0.5 and soft borders."""
    rng = np.random.default_rng(seed)
    field = np.stack([gaussian_filter(rng.standard_normal((size, size)), 6) for _ in range(count)])
    return (1.0 / (1.0 + np.exp(-field / field.std() * 4))).astype(np.float32)


def agree_away_from_threshold(masks: np.ndarray, reference_prob: np.ndarray, threshold: float) -> None:
    far = np.abs(reference_prob - threshold) > NEAR
    assert far.mean() > 0.9  # the comparison covers most pixels
    np.testing.assert_array_equal(masks[far], (reference_prob > threshold)[far])


@pytest.mark.parametrize("height, width", [(600, 800), (768, 1024), (112, 112), (50, 37)])
def test_resized_masks_are_the_thresholded_float_resize(height, width):
    prob = smooth_probabilities(2, 112, seed=height)
    masks = resized_masks(prob, height, width, 0.5)
    assert masks.dtype == np.uint8 and masks.shape == (2, height, width)
    assert set(np.unique(masks)) <= {0, 1}
    reference = resize_probabilities(prob, height, width)
    agree_away_from_threshold(masks, reference, 0.5)
    # where they may differ at all, few do: the masks are the same up to a border pixel here and there
    assert (masks != (reference > 0.5)).mean() < 2e-3


def test_a_box_of_the_map_is_the_crop_of_the_larger_resize():
    prob = smooth_probabilities(1, 112, seed=3)
    whole = resized_masks(prob, 600, 600, 0.4)
    scale = 112 / 600
    box = (50 * scale, 80 * scale, 550 * scale, 440 * scale)  # x0, y0, x1, y1 in map pixels
    part = resized_masks(prob, 360, 500, 0.4, box)
    # the same filter positions, up to float rounding of the box: a few border pixels at most
    assert (part != whole[:, 80:440, 50:550]).mean() < 1e-3


@pytest.mark.parametrize("shape", [(480, 640), (600, 800)])
def test_map_back_masks_equal_the_thresholded_map_back_on_a_scanner_frame(shape):
    frames, _, _ = scanner_clip(4, *shape)
    from echoseg.region import detect_region

    region = detect_region(frames)
    assert not region.is_full and region.fan_mask is not None
    prob = smooth_probabilities(2, 112, seed=shape[0])
    masks = map_back_masks(prob, region, 0.5)
    assert masks.shape == (2, *shape) and masks.dtype == np.uint8
    agree_away_from_threshold(masks, map_back(prob, region), 0.5)
    x0, y0, x1, y1 = region.box
    outside = np.ones(shape, bool)
    outside[y0:y1, x0:x1] = ~region.fan_mask
    assert not masks[:, outside].any()  # nothing outside the fan


def test_logits_to_masks_uses_the_mask_path_for_full_and_cropped_regions():
    config = ModelConfig(input_size=32)
    logits = np.random.default_rng(0).standard_normal((2, 32, 32)).astype(np.float32) * 4
    prob = 1.0 / (1.0 + np.exp(-logits))
    region = Region(10, 5, 50, 45, 60, 70, "detected", ((30, 5), (10, 44), (50, 44)))
    np.testing.assert_array_equal(
        logits_to_masks(logits, 60, 70, config, region), map_back_masks(prob, region, config.threshold)
    )
    np.testing.assert_array_equal(
        logits_to_masks(logits, 60, 70, config), map_back_masks(prob, full_region(60, 70), config.threshold)
    )
    with pytest.raises(ValueError, match="probabilities must be"):
        resized_masks(prob[0], 60, 70, 0.5)
