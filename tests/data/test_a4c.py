"""The apical four-chamber simulator: geometry of masks, fan and furniture; the dataset it writes."""

import csv
import json

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, gaussian_filter

from echoseg.cli import main
from echoseg.video import read_video
from training.data.a4c import generate_a4c, parse_sizes, render_a4c_clip
from training.data.check import check_dataset
from training.data.echonet import load_clips

from .conftest import echonet_ed_es

FRAMES = 24


@pytest.fixture(scope="module", params=[(112, 112), (120, 160), (96, 176)], ids=lambda s: f"{s[0]}x{s[1]}")
def clip(request):
    height, width = request.param
    return render_a4c_clip(3, frames=FRAMES, height=height, width=width)


def test_shapes_and_sizes_are_honoured(clip):
    _, h, w = clip.masks.shape
    assert clip.frames.shape == (FRAMES, h, w) and clip.frames.dtype == np.uint8
    assert clip.masks.dtype == np.uint8 and set(np.unique(clip.masks)) == {0, 1}
    assert clip.fan.shape == (h, w)
    x0, y0, x1, y1 = clip.region
    rows, cols = np.nonzero(clip.fan)
    assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max(), rows.max())
    assert min(clip.spacing_mm) > 0 and clip.fps > 0
    if clip.cropped:  # the fan's bounding box is the frame, as in EchoNet's crops
        assert x0 == 0 and x1 == w - 1 and y1 >= h - 2 and not clip.furniture
    else:  # a scanner frame: the fan spans about two thirds of the frame's height, with room around it
        assert 0.55 < (y1 - y0 + 1) / h < 0.92 and x1 - x0 + 1 < w and clip.furniture
        assert clip.spacing_mm[0] == pytest.approx(clip.spacing_mm[1])


def test_masks_are_inside_the_fan_and_never_empty(clip):
    areas = clip.masks.reshape(FRAMES, -1).sum(1)
    assert areas.min() > 0.01 * clip.fan.sum()
    assert not (clip.masks.astype(bool) & ~clip.fan).any()
    assert areas[clip.ed] > 1.1 * areas[clip.es]  # the cavity is larger at end-diastole
    assert clip.edv > clip.esv > 0 and 10 < clip.ef < 90
    assert clip.ed != clip.es


def test_the_cavity_is_dark_and_its_border_bright(clip):
    """The mask sits on the image's cavity: blood is darker than the myocardium just outside it."""
    inside, ring = [], []
    for t in range(FRAMES):
        m = clip.masks[t].astype(bool)
        grown = binary_dilation(m, iterations=max(2, clip.masks.shape[1] // 60))
        inside.append(clip.frames[t][m].mean())
        ring.append(clip.frames[t][grown & ~m & clip.fan].mean())
    assert np.mean(ring) > 1.5 * np.mean(inside)


def test_speckle_is_partly_persistent(clip):
    """Scatterers move with the tissue and are partly renewed: consecutive frames' speckle is
    correlated, but neither frozen nor as similar a second later."""
    f = clip.frames.astype(np.float32)
    speckle = f - gaussian_filter(f, (0, 3, 3))
    sel = clip.fan & ~clip.masks.any(axis=0)
    near = [np.corrcoef(speckle[t][sel], speckle[t + 1][sel])[0, 1] for t in range(FRAMES - 1)]
    far = np.corrcoef(speckle[0][sel], speckle[FRAMES - 1][sel])[0, 1]
    assert 0.3 < np.mean(near) < 0.97
    assert far < np.mean(near) - 0.05


def test_tracings_outline_the_true_mask(clip):
    from training.data.tracings import tracing_mask

    for frame, rows in clip.tracings.items():
        assert rows.shape == (21, 4)
        rebuilt = tracing_mask(rows, *clip.masks.shape[1:])
        truth = clip.masks[frame].astype(bool)
        dice = 2 * (rebuilt.astype(bool) & truth).sum() / (rebuilt.sum() + truth.sum())
        assert dice > 0.9


def test_the_annulus_line_closes_the_true_cavity(clip):
    """Per frame, the true cavity lies on one side of the mitral annulus line and touches it: the
    line is where the LV ends and the atrium begins."""
    rows, cols = np.mgrid[: clip.masks.shape[1], : clip.masks.shape[2]]
    assert clip.annulus_px.shape == (len(clip.masks), 2, 2) and clip.mv_open.shape == (len(clip.masks),)
    assert clip.mv_open.min() >= 0 and clip.mv_open.max() <= 1 and clip.mv_open.max() > 0.5
    for t in range(len(clip.masks)):
        (sx, sy), (lx, ly) = clip.annulus_px[t]
        side = (lx - sx) * (rows - sy) - (ly - sy) * (cols - sx)  # signed distance x the line's length
        lv = clip.masks[t] > 0
        signs = np.sign(side[lv])
        assert abs(signs.sum()) == lv.sum()  # all on one side
        closest = np.abs(side[lv]).min() / np.hypot(lx - sx, ly - sy)
        assert closest < 1.0  # within a pixel of the line: the cavity reaches the annulus


def test_furniture_is_drawn_outside_the_fan_only():
    bare = render_a4c_clip(5, frames=6, height=120, width=160, furniture=False)
    dressed = render_a4c_clip(5, frames=6, height=120, width=160, furniture=True)
    np.testing.assert_array_equal(bare.masks, dressed.masks)
    changed = (bare.frames != dressed.frames).any(axis=0)
    assert changed.sum() > 0.01 * changed.size  # text, ECG, ticks...
    assert not (changed & dressed.fan).any()
    assert not bare.frames[:, ~bare.fan].any()  # without furniture the screen is black outside the fan
    # The ECG sweeps: the furniture differs from frame to frame.
    assert (dressed.frames[0] != dressed.frames[-1])[~dressed.fan].any()


def test_colour_frames_and_their_luma():
    clip = render_a4c_clip(8, frames=4, height=96, width=128, color=True)
    assert clip.frames.shape == (4, 96, 128, 3)
    assert clip.gray().shape == (4, 96, 128)
    outside = clip.frames[:, ~clip.fan]
    assert (outside.max(axis=-1).astype(int) - outside.min(axis=-1)).max() > 50  # coloured furniture


def test_same_seed_same_clip():
    a = render_a4c_clip(np.random.default_rng(4), frames=5, height=64, width=80)
    b = render_a4c_clip(np.random.default_rng(4), frames=5, height=64, width=80)
    c = render_a4c_clip(np.random.default_rng(6), frames=5, height=64, width=80)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.frames, c.frames)


@pytest.fixture(scope="module")
def a4c_root(tmp_path_factory):
    return generate_a4c(
        tmp_path_factory.mktemp("a4c"), 4, frames=20, sizes=((112, 112), (96, 128), (120, 96)), seed=2
    )


def test_dataset_layout_sizes_and_sidecars(a4c_root):
    with open(a4c_root / "FileList.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    seen = set()
    for r in rows:
        name = r["FileName"]
        frames, fps = read_video(a4c_root / "Videos" / f"{name}.avi")
        h, w = int(r["FrameHeight"]), int(r["FrameWidth"])
        seen.add((h, w))
        assert (h, w) in {(112, 112), (96, 128), (120, 96)}
        assert frames.shape == (int(r["NumberOfFrames"]), h, w)
        assert fps == pytest.approx(float(r["FPS"]))
        masks = np.load(a4c_root / "Masks" / f"{name}.npy")
        assert masks.shape == frames.shape
        meta = json.loads((a4c_root / "Meta" / f"{name}.json").read_text())
        reg = meta["region"]
        assert 0 <= reg["x0"] < reg["x1"] < w and 0 <= reg["y0"] < reg["y1"] < h
        ys, xs = np.nonzero(masks.any(axis=0))
        assert reg["x0"] <= xs.min() and xs.max() <= reg["x1"]
        assert reg["y0"] <= ys.min() and ys.max() <= reg["y1"]
        assert meta["spacing_mm"]["row"] > 0 and meta["physical_delta_cm"]["x"] > 0
        assert float(r["EDV"]) > float(r["ESV"]) > 0
    assert len(seen) >= 2


def test_echonet_loader_convention_and_our_loader_agree(a4c_root):
    """Last-listed traced frame = ED, first = ES (EchoNet's rule); our loader (by area) agrees."""
    read = echonet_ed_es(a4c_root / "VolumeTracings.csv")
    clips = {c.name: c for c in load_clips(a4c_root)}
    assert sorted(read) == sorted(clips)
    for name, (ed, es) in read.items():
        meta = json.loads((a4c_root / "Meta" / f"{name}.json").read_text())
        assert (ed, es) == (meta["ed"], meta["es"]) == (clips[name].ed, clips[name].es)
        areas = clips[name].true_masks.reshape(clips[name].true_masks.shape[0], -1).sum(1)
        assert areas[ed] > areas[es]
    report = check_dataset(a4c_root)
    assert report["ok"], report


def test_workers_do_not_change_the_files(tmp_path):
    one = generate_a4c(tmp_path / "one", 2, frames=8, sizes="64x80", seed=9, workers=1)
    two = generate_a4c(tmp_path / "two", 2, frames=8, sizes="64x80", seed=9, workers=2)
    for name in ("FileList.csv", "VolumeTracings.csv"):
        assert (one / name).read_text() == (two / name).read_text()
    for f in sorted((one / "Masks").iterdir()):
        np.testing.assert_array_equal(np.load(f), np.load(two / "Masks" / f.name))


def test_synth_command_a4c_mode(tmp_path, capsys):
    argv = ["data", "synth", "--out", str(tmp_path), "--videos", "2", "--mode", "a4c", "--frames", "8"]
    assert main([*argv, "--sizes", "64x96", "--seed", "1"]) == 0
    assert "wrote 2 clips" in capsys.readouterr().out
    assert len(list((tmp_path / "Videos").glob("*.avi"))) == 2
    assert len(list((tmp_path / "Meta").glob("*.json"))) == 2


def test_arguments_are_checked(tmp_path):
    assert parse_sizes("112x112, 240X320") == ((112, 112), (240, 320))
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_sizes("240-320")
    with pytest.raises(ValueError, match="32 pixels"):
        render_a4c_clip(0, frames=8, height=16, width=64)
    with pytest.raises(ValueError, match="videos"):
        generate_a4c(tmp_path, 0)
