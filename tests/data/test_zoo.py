"""The scanner zoo: every layout renders with its truth, deterministically, and differs as promised."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.a4c import generate_a4c
from training.data.echonet import load_clips
from training.data.zoo import LAYOUT_NAMES, LAYOUTS, generate_zoo, layout_by_name, render_zoo_clip


def test_the_zoo_has_at_least_twelve_distinct_layouts():
    assert len(LAYOUTS) >= 12
    assert len(set(LAYOUT_NAMES)) == len(LAYOUT_NAMES)
    with pytest.raises(ValueError, match="unknown zoo layout"):
        layout_by_name("nope")


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_each_layout_renders_its_truth(name):
    clip = render_zoo_clip(name, seed=3, frames=4)
    t, h, w = clip.frames.shape
    assert clip.rgb.shape == (t, h, w, 3) and clip.fan.shape == (h, w) and clip.masks.shape == (t, h, w)
    assert 0.03 < clip.fan.mean() < 0.6  # the image is part of the screen, never all of it
    lv = clip.masks.astype(bool)
    assert lv.any(axis=(1, 2)).all()
    assert (lv & ~clip.fan).sum() <= 0.02 * lv.sum()  # the LV lies in the image (resampling: edges)
    if name != "resampled-stale":  # a live image: the fan moves, the furniture does not
        moving = clip.frames.std(axis=0) > 0
        assert moving[clip.fan].mean() > 0.5
        assert moving[~clip.fan].mean() < 0.05


def test_layouts_differ_the_way_they_say():
    fan_mean = {n: render_zoo_clip(n, 5, frames=4) for n in ("standard", "dim", "bright", "resampled-stale")}
    level = {n: c.frames[:, c.fan].mean() for n, c in fan_mean.items()}
    assert level["dim"] < 0.3 * level["standard"] and level["bright"] > level["dim"]
    stale = fan_mean["resampled-stale"]
    _, _, x1, y1 = stale.region  # left at the full-size coordinates: outside the smaller matrix
    assert x1 >= stale.frames.shape[2] or y1 >= stale.frames.shape[1]


def test_a_seed_gives_the_same_clip():
    a, b = render_zoo_clip("doppler", 7, frames=4), render_zoo_clip("doppler", 7, frames=4)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.masks, b.masks)
    c = render_zoo_clip("doppler", 8, frames=4)
    assert not np.array_equal(a.rgb, c.rgb)


def test_generate_zoo_writes_the_echonet_layout(tmp_path):
    out = generate_zoo(tmp_path / "zoo", 2, frames=8, layouts=("dim", "sepia"))
    names = sorted(p.stem for p in (out / "Videos").glob("*.avi"))
    assert len(names) == 2
    assert sorted(p.stem for p in (out / "Masks").glob("*.npy")) == names
    rows = (out / "FileList.csv").read_text().splitlines()
    assert len(rows) == 3
    with pytest.raises(ValueError, match="held out"):
        generate_zoo(tmp_path / "x", 1, seed=10**6)


def test_zoo_clips_append_to_an_a4c_training_set(tmp_path):
    """``--append`` adds zoo clips to an A4C folder's tables; the same names twice are refused."""
    out = tmp_path / "mix"
    generate_a4c(out, 2, frames=8, sizes=((112, 112),), seed=3)
    generate_zoo(out, 2, frames=8, layouts=("dim", "linear"), append=True)
    files = [row.split(",")[0] for row in (out / "FileList.csv").read_text().splitlines()[1:]]
    assert len(files) == 4 and len({f[:5] for f in files}) == 2  # 0XA4C..., 0XZOO...
    assert sorted(p.stem for p in (out / "Videos").glob("*.avi")) == sorted(files)
    traced = {row.split(",")[0] for row in (out / "VolumeTracings.csv").read_text().splitlines()[1:]}
    assert traced == {f"{f}.avi" for f in files}
    assert len(load_clips(out)) == 4
    with pytest.raises(ValueError, match="already in"):
        generate_zoo(out, 2, frames=8, layouts=("dim", "linear"), append=True)
    generate_zoo(out, 1, frames=8, layouts=("dim",))  # without append: the tables are replaced
    assert len((out / "FileList.csv").read_text().splitlines()) == 2
