"""The simulator fitted to a site (``training.adapt.fit``): statistics that see what differs between
scanners, a search that moves towards a site's setting, and the labelled set rendered there."""

from __future__ import annotations

import numpy as np
import pytest

from training.adapt import fit
from training.data.a4c import dataset_folders, write_clip
from training.data.store import ensure_store
from training.data.synthetic import write_tables

SIZE = (64, 80)
INPUT = 48
HAZY_COARSE = {
    "axial_mm": 1.4,
    "lateral_deg": 2.2,
    "density": 0.08,
    "clutter": 1.0,
    "clutter_depth": 40.0,
    "dynamic_range_db": 30.0,
    "gain_db": 5.0,
    "smoothing": 0.2,
    "sector_deg": 50.0,
}
FINE_CLEAR = {**HAZY_COARSE, "axial_mm": 0.3, "lateral_deg": 0.5, "density": 0.8, "clutter": 0.0}


def _features(params, seeds=(0, 1)) -> np.ndarray:
    return np.mean(
        [
            fit.image_statistics(fit.model_input(fit.render_at(s, params, SIZE, 8).frames, INPUT))
            for s in seeds
        ],
        axis=0,
    )


def _site(tmp_path, params, clips: int = 4):
    out = dataset_folders(tmp_path / "site")
    rows, tracings = [], []
    for i in range(clips):
        clip = fit.render_at(100 + i, params, SIZE, 12)
        row, tr = write_clip(out, f"0XSITE{i:04d}", clip.frames, clip, 12, "TRAIN")
        rows.append(row)
        tracings += tr
    write_tables(out, rows, tracings, append=False)
    return ensure_store(out, tmp_path / "store", progress=False)


def test_statistics_see_speckle_size_and_near_field_haze():
    coarse, fine = _features(HAZY_COARSE), _features(FINE_CLEAR)
    n_q, bands = len(fit.QUANTILES), fit.DEPTH_BANDS
    assert np.all(np.diff(coarse[:n_q]) >= 0) and np.all(np.diff(fine[:n_q]) >= 0)  # quantiles ascend
    lag2_across = n_q + 2 * bands + 1
    assert coarse[lag2_across] > fine[lag2_across] + 0.1  # wide PSF: neighbours 2 px apart alike
    top = n_q
    assert coarse[top] > fine[top] + 0.05  # the haze lights the near field


def test_live_area_leaves_out_still_furniture():
    frames = np.zeros((8, 40, 40), np.uint8)
    frames[:, 2:6, 2:30] = 200  # a caption: bright but still
    rng = np.random.default_rng(0)
    frames[:, 15:35, 10:30] = rng.integers(0, 255, (8, 20, 20))  # speckle: changes every frame
    live = fit.live_area(frames)
    assert live[20:30, 15:25].all() and not live[2:6, 2:30].any() and not live[0, 39]


@pytest.mark.slow
def test_the_fit_moves_towards_the_sites_setting(tmp_path):
    store = _site(tmp_path, HAZY_COARSE)
    result = fit.fit_simulator(store, store.names("TRAIN"), INPUT, seed=0, candidates=40)
    # 12 random settings, then two Nelder-Mead searches of at most 14 renders each
    assert 12 < result.candidates <= 40 and result.site_clips == 4 and result.size == SIZE
    assert result.distance < 0.6 * result.start_distance  # much nearer than the training recipe
    assert set(result.params) == {p.name for p in fit.SPACE}
    for p in fit.SPACE:
        assert p.low <= result.params[p.name] <= p.high
    # The same search from the same seed gives the same fit (one digest names it).
    again = fit.fit_simulator(store, store.names("TRAIN"), INPUT, seed=0, candidates=40)
    assert again.digest() == result.digest()
    with pytest.raises(ValueError, match="candidates must be at least"):
        fit.fit_simulator(store, store.names("TRAIN"), INPUT, candidates=1)


def test_the_fitted_set_is_labelled_and_keeps_recipe_clips(tmp_path):
    point = [0.5] * len(fit.SPACE)
    result = fit.SimulatorFit(point, fit._params(point), 0.3, 1.0, SIZE, 6, 4)
    root = fit.render_fitted(tmp_path / "fitted", result, 6, frames=8, seed=2)
    store = ensure_store(root, tmp_path / "store", progress=False)
    names = store.names()
    assert len(names) == 6 and all(store.records[n].has_true for n in names)
    assert {store.records[n].split for n in names} >= {"TRAIN"}
    assert all((store.records[n].height, store.records[n].width) == SIZE for n in names)
    # every other clip is the recipe's (drawn parameters), the others the fit's (the video codec
    # is lossy: the stored frames are nearest to the clip they were rendered as)
    seed = 1_000_000 + 2 * 100_000
    for i, recipe in ((0, False), (1, True)):
        stored = store.clip(names[i]).frames.astype(np.float32)
        as_recipe = fit.render_at(seed + i, None, SIZE, 8).frames
        as_fit = fit.render_at(seed + i, result.params, SIZE, 8).frames
        errors = [np.abs(stored - f).mean() for f in (as_recipe, as_fit)]
        assert (errors[0] < errors[1]) == recipe, (i, errors)
    with pytest.raises(ValueError, match="recipe_share"):
        fit.render_fitted(tmp_path / "x", result, 6, recipe_share=1.0)
