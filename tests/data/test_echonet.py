import pickle

import numpy as np
import pytest

from echoseg.config import ModelConfig
from echoseg.preprocess import normalize
from echoseg.video import VideoError
from training.data.dataset import EchoNetDataset
from training.data.echonet import DatasetError, load_clips
from training.data.tracings import polygon_mask, tracing_mask

from .conftest import make_echonet, moving_square_frames, rect_tracing


def _two_videos():
    big = rect_tracing(10, 40, 8, 50)  # 31 x 43 pixels
    small = rect_tracing(15, 30, 12, 40)  # 16 x 29 pixels
    return {
        "vidA": {
            "frames": moving_square_frames(10),
            "split": "train",
            "ef": 61.5,
            "tracings": [(2, small), (7, big)],
        },
        "vidB": {
            "frames": moving_square_frames(12),
            "split": "Test",
            "ef": 40.0,
            "tracings": [(1, big), (9, small)],
        },
    }


def test_polygon_fill_follows_skimage_semantics():
    # scikit-image's documented example: a polygon beyond the image is clipped; boundary pixels count.
    mask = polygon_mask(np.array([1, 100, 100, 1, 1]), np.array([-1, -1, 100, 100, 1]), (10, 10))
    expected = np.zeros((10, 10), dtype=np.uint8)
    expected[1:, :] = 1
    np.testing.assert_array_equal(mask, expected)
    # A triangle: pixel centres inside or on the edges.
    tri = polygon_mask(np.array([0, 4, 4]), np.array([0, 0, 4]), (5, 5))
    np.testing.assert_array_equal(tri, np.tril(np.ones((5, 5), dtype=np.uint8)))


def test_tracing_rows_build_the_chord_polygon():
    rows = np.array(rect_tracing(10.2, 40.4, 8, 50, chords=8))
    mask = tracing_mask(rows, 64, 64)
    expected = np.zeros((64, 64), dtype=np.uint8)
    expected[8:51, 10:41] = 1  # coordinates rounded to the pixel, borders included
    np.testing.assert_array_equal(mask, expected)
    # The long-axis row is not part of the polygon: moving it changes nothing.
    moved = rows.copy()
    moved[0] = [0, 0, 63, 63]
    np.testing.assert_array_equal(tracing_mask(moved, 64, 64), expected)


def test_header_order_file_names_several_rows_and_split_case(tmp_path):
    header = (
        "Split",
        "NumberOfFrames",
        "FileName",
        "FPS",
        "EF",
        "FrameWidth",
        "FrameHeight",
        "EDV",
        "ESV",
        "Extra",
    )
    root = make_echonet(tmp_path, _two_videos(), header=header)
    clips = {c.name: c for c in load_clips(root)}
    assert set(clips) == {"vidA", "vidB"}
    a = clips["vidA"]
    assert a.ef == pytest.approx(61.5) and a.split == "TRAIN" and a.fps == pytest.approx(50.0)
    assert a.frames.shape == (10, 64, 64) and a.spacing == (1.0, 1.0) and a.true_masks is None
    assert sorted(a.traced) == [2, 7]
    # ED is the traced frame with the larger area, whatever the row order.
    assert (a.ed, a.es) == (7, 2)
    assert (clips["vidB"].ed, clips["vidB"].es) == (1, 9)
    assert int(a.traced[7].sum()) == 31 * 43
    assert [c.name for c in load_clips(root, split="test")] == ["vidB"]
    assert [c.name for c in load_clips(root, split="TRAIN")] == ["vidA"]
    with pytest.raises(ValueError, match="TRAIN"):
        load_clips(root, split="holdout")


def test_avi_extension_in_filelist_is_accepted(tmp_path):
    root = make_echonet(tmp_path, _two_videos(), avi_in_filelist=True)
    assert sorted(c.name for c in load_clips(root)) == ["vidA", "vidB"]


def test_missing_files_and_wrong_header(tmp_path):
    root = make_echonet(tmp_path / "a", _two_videos())
    (root / "Videos" / "vidB.avi").unlink()
    with pytest.raises(FileNotFoundError, match=r"vidB.*line 3"):
        load_clips(root)
    assert [c.name for c in load_clips(root, split="TRAIN")] == ["vidA"]

    root = make_echonet(tmp_path / "b", _two_videos())
    (root / "FileList.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"FileList\.csv"):
        load_clips(root)

    root = make_echonet(tmp_path / "c", _two_videos())
    (root / "VolumeTracings.csv").write_text("FileName,X1,Y1,X2,Y2,FrameIndex\n")
    with pytest.raises(DatasetError, match=r"VolumeTracings.csv.*\['Frame'\]"):
        load_clips(root)


def test_corrupt_avi_names_the_file(tmp_path):
    root = make_echonet(tmp_path, _two_videos())
    (root / "Videos" / "vidA.avi").write_bytes(b"\x00" * 4096)
    with pytest.raises(VideoError, match=r"vidA\.avi"):
        load_clips(root)


def test_tracing_outside_the_frame_or_clip(tmp_path):
    videos = _two_videos()
    videos["vidA"]["tracings"][1][1][3] = [10, 30, 90, 30]  # a chord ending beyond the 64-pixel width
    root = make_echonet(tmp_path / "a", videos)
    with pytest.raises(DatasetError, match=r"VolumeTracings.csv, line \d+: vidA: frame 7 .*outside"):
        load_clips(root)
    videos = _two_videos()
    videos["vidB"]["tracings"][1] = (40, videos["vidB"]["tracings"][1][1])
    root = make_echonet(tmp_path / "b", videos)
    with pytest.raises(DatasetError, match=r"vidB: traced frame 40 outside the video's 12 frames"):
        load_clips(root)


def test_labelled_windows_replicate_edges_and_match_preprocessing(tmp_path):
    root = make_echonet(tmp_path, _two_videos())
    config = ModelConfig(num_frames=3, input_size=64, depth=3, calibrated_levels=(0,), mean=0.2, std=0.5)
    ds = EchoNetDataset(root, "all", config)
    assert len(ds) == 4  # one item per traced frame
    clips = {c.name: c for c in load_clips(root)}
    for index, (i, frame) in enumerate(ds.items):
        item = ds[index]
        clip = clips[ds.names[i]]
        last = clip.frames.shape[0] - 1
        expected = clip.frames[[max(frame - 1, 0), frame, min(frame + 1, last)]]
        assert item["frames"].shape == (3, 64, 64)
        np.testing.assert_allclose(item["frames"].numpy(), normalize(expected, config), atol=1e-6)
        np.testing.assert_array_equal(item["mask"][0].numpy(), clip.traced[frame])
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers may receive the dataset pickled
    np.testing.assert_array_equal(clone[1]["frames"].numpy(), ds[1]["frames"].numpy())
    # Resized to another input size, the mask stays binary.
    small = EchoNetDataset(root, "TRAIN", config.replace(input_size=32))
    mask = small[0]["mask"]
    assert mask.shape == (1, 32, 32) and set(np.unique(mask.numpy())) <= {0.0, 1.0}


def test_unlabelled_windows_redrawn_per_epoch(tmp_path):
    root = make_echonet(tmp_path, _two_videos())
    config = ModelConfig(num_frames=3, input_size=64, depth=3, calibrated_levels=(0,))
    ds = EchoNetDataset(root, None, config, mode="unlabelled", windows_per_video=5, seed=3)
    assert len(ds) == 10 and "mask" not in ds[0]
    first = [ds[i]["frames"] for i in range(len(ds))]
    again = [ds[i]["frames"] for i in range(len(ds))]
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    ds.set_epoch(1)
    later = [ds[i]["frames"] for i in range(len(ds))]
    assert not all(np.array_equal(x, y) for x, y in zip(first, later, strict=True))
    with pytest.raises(ValueError, match="labelled"):
        EchoNetDataset(root, None, config, mode="semi")
