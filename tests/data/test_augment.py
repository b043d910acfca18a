import numpy as np
import pytest

from echoseg.config import ModelConfig
from training.data.augment import Augmentation, augment_window
from training.data.clip import Clip
from training.data.dataset import ClipWindowDataset


def _asymmetric_mask(size=48) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[8:30, 12:20] = 1  # a tall bar
    mask[8:14, 20:36] = 1  # an arm to the right at the top: no flip or transpose maps it onto itself
    return mask


@pytest.mark.parametrize(
    ("aug", "reference"),
    [
        (Augmentation(hflip=True), lambda m: m[:, ::-1]),
        (Augmentation(vflip=True), lambda m: m[::-1, :]),
        (Augmentation(transpose=True), lambda m: m.T),
        (Augmentation(hflip=True, vflip=True, transpose=True), lambda m: m[::-1, ::-1].T),
    ],
)
def test_flips_are_the_numpy_flips(aug, reference):
    mask = _asymmetric_mask()
    out = aug.apply(mask[None], order=0)[0]
    np.testing.assert_array_equal(out, reference(mask))
    assert not np.array_equal(out, mask)


def test_rotation_turns_counter_clockwise_and_keeps_the_mask_binary():
    mask = np.zeros((41, 41), dtype=np.uint8)
    mask[20, 20:38] = 1  # a ray pointing right from the centre
    out = Augmentation(angle=90.0).apply(mask[None], order=0)[0]
    assert set(np.unique(out)) <= {0, 1}
    rows, cols = np.nonzero(out)
    assert np.all(np.abs(cols - 20) <= 1) and rows.mean() < 20  # now pointing up


def test_frames_and_mask_stay_aligned():
    """Frames whose content equals the mask still equal it after any augmentation."""
    mask = _asymmetric_mask()
    frames = np.repeat((mask * 255)[None], 3, axis=0)  # (k, H, W)
    for seed in range(12):
        rng = np.random.default_rng(seed)
        out_frames, out_mask = augment_window(frames, mask, rng)
        assert out_frames.shape == (3, 48, 48) and out_frames.dtype == np.uint8
        assert set(np.unique(out_mask)) <= {0, 1}
        for f in out_frames:
            seen = f > 127
            agree = 2 * (seen & (out_mask > 0)).sum() / (seen.sum() + out_mask.sum())
            assert agree > 0.95, (seed, agree)
        np.testing.assert_array_equal(out_frames[0], out_frames[2])


def test_dataset_augments_frames_and_mask_alike():
    mask = _asymmetric_mask()
    frames = np.repeat((mask * 255)[None], 5, axis=0)
    clip = Clip(name="c", frames=frames, fps=50.0, ef=50.0, split="TRAIN", traced={2: mask}, ed=2, es=2)
    config = ModelConfig(num_frames=3, input_size=48, depth=3, calibrated_levels=(0,))
    ds = ClipWindowDataset.from_clips([clip], config, augment=True, seed=5)
    changed = 0
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[0]
        seen = item["frames"][1].numpy() > 0.5
        m = item["mask"][0].numpy() > 0.5
        assert 2 * (seen & m).sum() / (seen.sum() + m.sum()) > 0.95
        changed += not np.array_equal(m, mask > 0)
    assert changed >= 4  # the augmentation is redrawn per epoch


def test_flips_narrow_what_is_drawn_without_changing_the_random_stream():
    paper = [Augmentation.draw(np.random.default_rng([3, i])) for i in range(200)]
    apical = [Augmentation.draw(np.random.default_rng([3, i]), flips="h") for i in range(200)]
    assert not any(a.vflip or a.transpose for a in apical)
    assert [a.hflip for a in apical] == [p.hflip for p in paper]  # same draws, fewer flips kept
    assert [a.angle for a in apical] == [p.angle for p in paper]
    assert any(p.vflip for p in paper) and any(p.transpose for p in paper) and any(a.hflip for a in apical)
    with pytest.raises(ValueError, match="flips must be letters"):
        Augmentation.draw(np.random.default_rng(0), flips="x")


def test_the_config_refuses_unknown_flips():
    from training.trainer.config import DataSection

    assert DataSection(flips="h").flips == "h"
    with pytest.raises(ValueError, match=r"data\.flips"):
        DataSection(flips="hz")
