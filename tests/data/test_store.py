"""The frame store: prepared once, read window by window, rebuilt when its source changes."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from echoseg.cli import main as echoseg_main
from echoseg.presets import get_preset
from echoseg.region import mask_to_input
from echoseg.video import write_avi
from training.data.dataset import ClipWindowDataset, StoreWindowDataset
from training.data.echonet import DatasetError, load_clips
from training.data.source import ClipSource
from training.data.store import FrameStore, StoreError, ensure_store, prepare


@pytest.fixture(scope="module")
def prepared(synth_root, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "s"
    report = prepare(synth_root, store, workers=2)
    assert report.decoded == 6 and report.unchanged == 0 and not report.problems
    return FrameStore(store)


def _same_clip(a, b):
    assert a.name == b.name and a.split == b.split and a.ef == b.ef and a.fps == b.fps
    assert (a.ed, a.es, a.spacing) == (b.ed, b.es, b.spacing)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert sorted(a.traced) == sorted(b.traced)
    for f in a.traced:
        np.testing.assert_array_equal(a.traced[f], b.traced[f])
    if a.true_masks is None:
        assert b.true_masks is None
    else:
        np.testing.assert_array_equal(a.true_masks, b.true_masks)


def test_store_holds_what_the_decoder_reads(prepared, synth_root):
    clips = load_clips(synth_root)
    assert sorted(prepared.records) == sorted(c.name for c in clips)
    for clip in clips:
        _same_clip(prepared.clip(clip.name), clip)
        rec = prepared.records[clip.name]
        assert rec.num_frames == len(clip.frames) and rec.has_true
        np.testing.assert_array_equal(prepared.read_frames(clip.name, [0, 0, 1]), clip.frames[[0, 0, 1]])
        last = rec.num_frames - 1
        np.testing.assert_array_equal(prepared.read_frames(clip.name, [last]), clip.frames[[last]])
        with pytest.raises(IndexError, match="outside"):
            prepared.read_frames(clip.name, [last + 1])
    assert [c.name for c in ClipSource(prepared.path, "TRAIN")] == [
        c.name for c in load_clips(synth_root, "TRAIN")
    ]


@pytest.mark.parametrize("mode", ["labelled", "unlabelled"])
@pytest.mark.parametrize("size", [112, 64])
def test_store_windows_equal_windows_of_decoded_clips(prepared, synth_root, mode, size):
    """The store changes where frames come from, not the windows: item for item, epoch for epoch."""
    config = get_preset("tiny").replace(input_size=size)
    kwargs = {"mode": mode, "augment": True, "seed": 4, "windows_per_video": 2}
    clips = load_clips(synth_root, "TRAIN")
    memory = ClipWindowDataset.from_clips(clips, config, **kwargs)
    stored = StoreWindowDataset(prepared, "TRAIN", config, **kwargs)
    assert stored.names == memory.names and stored.items == memory.items
    for epoch in (0, 1):
        memory.set_epoch(epoch)
        stored.set_epoch(epoch)
        for i in range(len(stored)):
            a, b = memory[i], stored[i]
            assert a.keys() == b.keys()
            for key in a:
                assert a[key].dtype == b[key].dtype
                np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def test_true_windows_are_labelled_with_the_drawn_frames_true_mask(prepared, synth_root):
    """Labelled windows at random frames carry that frame's true mask (the store's and the clips'
    alike), redrawn per epoch; validation-style sets (0 per video) keep only the traced frames."""
    config = get_preset("tiny").replace(input_size=64)
    kwargs = {"mode": "labelled", "augment": False, "seed": 4, "true_windows_per_video": 3}
    clips = load_clips(synth_root, "TRAIN")
    traced_only = StoreWindowDataset(prepared, "TRAIN", config, mode="labelled")
    stored = StoreWindowDataset(prepared, "TRAIN", config, **kwargs)
    memory = ClipWindowDataset.from_clips(clips, config, **kwargs)
    assert len(stored) == len(traced_only) + 3 * len(stored.names) == len(memory)
    drawn = [k for k, (_, target) in enumerate(stored.items) if target < 0]
    assert len(drawn) == 3 * len(stored.names)
    targets = {}
    for epoch in (0, 1):
        stored.set_epoch(epoch)
        memory.set_epoch(epoch)
        for k in drawn:
            a, b = stored[k], memory[k]
            np.testing.assert_array_equal(a["mask"].numpy(), b["mask"].numpy())
            np.testing.assert_array_equal(a["frames"].numpy(), b["frames"].numpy())
            # The mask is the true mask of the window's centre frame, brought to the input.
            i, _ = stored.items[k]
            rng = np.random.default_rng([stored.seed, epoch, k])
            frame = int(rng.integers(stored.num_frames[i]))
            targets.setdefault(k, set()).add(frame)
            truth = prepared.true_mask(stored.names[i], frame)
            expected = mask_to_input(truth, stored.region(i), 64)
            np.testing.assert_array_equal(a["mask"].numpy()[0], expected.astype(np.float32))
    assert any(len(frames) == 2 for frames in targets.values())  # redrawn per epoch
    with pytest.raises(IndexError, match="outside"):
        prepared.true_mask(stored.names[0], 10**6)
    with pytest.raises(ValueError, match="true_windows_per_video"):
        StoreWindowDataset(prepared, "TRAIN", config, true_windows_per_video=-1)


def test_prepare_again_keeps_unchanged_clips_and_rebuilds_changed_ones(synth_copy, tmp_path):
    store = tmp_path / "store"
    assert prepare(synth_copy, store).decoded == 6
    again = prepare(synth_copy, store)
    assert (again.decoded, again.unchanged, again.removed) == (0, 6, 0)

    # A re-encoded video (new content, new mtime) is decoded again and its new frames are served.
    name = sorted(FrameStore(store).records)[0]
    video = synth_copy / "Videos" / f"{name}.avi"
    old = load_clips(synth_copy)[0]
    inverted = 255 - FrameStore(store).clip(name).frames
    write_avi(video, inverted, fps=old.fps)
    report = prepare(synth_copy, store)
    assert (report.decoded, report.unchanged) == (1, 5)
    assert np.abs(FrameStore(store).clip(name).frames.astype(int) - inverted).mean() < 3

    # A changed tracing (the CSV, not the video) rebuilds that clip's masks.
    tracings = synth_copy / "VolumeTracings.csv"
    lines = tracings.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(name))
    cells = lines[row].split(",")
    cells[1] = f"{float(cells[1]) + 1:.4f}"
    lines[row] = ",".join(cells)
    tracings.write_text("\n".join(lines) + "\n")
    assert prepare(synth_copy, store).decoded == 1

    # A clip dropped from FileList.csv leaves the store.
    filelist = synth_copy / "FileList.csv"
    kept = [line for line in filelist.read_text().splitlines() if not line.startswith(name)]
    filelist.write_text("\n".join(kept) + "\n")
    report = prepare(synth_copy, store)
    assert report.removed == 1 and name not in FrameStore(store).records
    assert not (store / "frames" / f"{name}.npy").exists()


def test_verify_rehashes_what_size_and_mtime_would_miss(synth_copy, tmp_path):
    store = tmp_path / "store"
    prepare(synth_copy, store)
    name = sorted(FrameStore(store).records)[1]
    masks = synth_copy / "Masks" / f"{name}.npy"
    st = masks.stat()
    array = np.load(masks)
    array[0] = 1 - array[0]  # same size, different bytes, and the old mtime put back
    np.save(masks, array)
    os.utime(masks, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert prepare(synth_copy, store).decoded == 0  # size and mtime match: trusted
    assert prepare(synth_copy, store, verify=True).decoded == 1
    np.testing.assert_array_equal(FrameStore(store).clip(name).true_masks[0], array[0])


def test_damaged_store_files_are_named_and_rebuilt(synth_copy, tmp_path):
    store = tmp_path / "store"
    prepare(synth_copy, store)
    name = sorted(FrameStore(store).records)[2]
    path = store / "frames" / f"{name}.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(StoreError, match=name):
        FrameStore(store)
    assert prepare(synth_copy, store).decoded == 1
    assert FrameStore(store).records[name].num_frames > 0
    with pytest.raises(StoreError, match="not a frame store"):
        FrameStore(tmp_path)


def test_unreadable_video_is_a_problem_and_ensure_store_refuses(synth_copy, tmp_path):
    name = sorted(p.stem for p in (synth_copy / "Videos").iterdir())[3]
    (synth_copy / "Videos" / f"{name}.avi").write_bytes(b"not a video")
    report = prepare(synth_copy, tmp_path / "store")
    assert report.decoded == 5 and len(report.problems) == 1 and name in report.problems[0]
    with pytest.raises(DatasetError, match=name):
        ensure_store(synth_copy, tmp_path / "store")


def test_a_store_whose_source_is_gone_is_used_as_it_is(synth_copy, tmp_path):
    store = tmp_path / "store"
    prepare(synth_copy, store)
    shutil.rmtree(synth_copy)
    assert len(ensure_store(store)) == 6


def test_default_store_goes_to_the_cache(synth_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOSEG_CACHE", str(tmp_path / "cache"))
    store = ensure_store(synth_root, progress=False)
    assert tmp_path / "cache" / "stores" in store.path.parents and len(store) == 6


def test_cli_prepare(synth_root, tmp_path, capsys):
    assert echoseg_main(["data", "prepare", str(synth_root), "--out", str(tmp_path / "s"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["decoded"] == 6 and report["bytes"] > 0 and not report["problems"]


def test_camus_store_holds_what_the_camus_loader_reads(tmp_path):
    pytest.importorskip("SimpleITK")
    import importlib.util
    from pathlib import Path

    from training.data.camus import load_camus

    spec = importlib.util.spec_from_file_location("camus_case", Path(__file__).with_name("test_camus.py"))
    case = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(case)
    root = tmp_path / "camus"
    case._make_patient(root, "patient0001", "nii")
    case._make_patient(root, "patient0420", "mhd")
    store = ensure_store(root, tmp_path / "store", progress=False)
    clips = load_camus(root)
    assert sorted(store.records) == sorted(c.name for c in clips)
    for clip in clips:
        _same_clip(store.clip(clip.name), clip)
    assert store.names("VAL") == ["patient0420_2CH", "patient0420_4CH"]
    assert prepare(root, tmp_path / "store").unchanged == 4
    config = get_preset("tiny")
    windows = StoreWindowDataset(store, "TRAIN", config, mode="labelled")
    assert len(windows) == 4 and windows[0]["mask"].shape == (1, config.input_size, config.input_size)
    assert [c.name for c in ClipSource(root, "VAL")] == ["patient0420_2CH", "patient0420_4CH"]


def test_a_missing_video_is_a_problem_not_a_crash(synth_copy, tmp_path):
    name = sorted(p.stem for p in (synth_copy / "Videos").iterdir())[4]
    (synth_copy / "Videos" / f"{name}.avi").unlink()
    report = prepare(synth_copy, tmp_path / "store")
    assert report.decoded == 5 and len(report.problems) == 1
    assert name in report.problems[0] and "not found" in report.problems[0]
