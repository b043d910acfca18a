import csv

import numpy as np
import pytest

from echoseg.cardiac import ejection_fraction, volume_method_of_discs
from echoseg.cli import main
from echoseg.video import read_video
from training.data.echonet import load_clips
from training.data.synthetic import NUM_CHORDS, generate

from .conftest import SYNTH_FRAMES, SYNTH_VIDEOS, echonet_ed_es


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_same_seed_same_files_other_seed_differs(tmp_path):
    a = generate(tmp_path / "a", 2, frames=16, size=64, seed=11)
    b = generate(tmp_path / "b", 2, frames=16, size=64, seed=11)
    c = generate(tmp_path / "c", 2, frames=16, size=64, seed=12)
    for name in ("FileList.csv", "VolumeTracings.csv"):
        assert (a / name).read_text() == (b / name).read_text()
    assert (a / "FileList.csv").read_text() != (c / "FileList.csv").read_text()
    for f in sorted((a / "Videos").iterdir()):
        assert f.read_bytes() == (b / "Videos" / f.name).read_bytes()
        np.testing.assert_array_equal(
            np.load(a / "Masks" / f.with_suffix(".npy").name),
            np.load(b / "Masks" / f.with_suffix(".npy").name),
        )


def test_layout_and_reference_values(synth_root):
    files = _rows(synth_root / "FileList.csv")
    assert len(files) == SYNTH_VIDEOS
    assert {r["Split"] for r in files} <= {"TRAIN", "VAL", "TEST"}
    assert sum(r["Split"] == "TRAIN" for r in files) >= SYNTH_VIDEOS // 2
    tracings = _rows(synth_root / "VolumeTracings.csv")
    for r in files:
        name = r["FileName"]
        assert not name.endswith(".avi")  # as in EchoNet-Dynamic's FileList; the tracings carry .avi
        frames, fps = read_video(synth_root / "Videos" / f"{name}.avi")
        assert frames.shape == (int(r["NumberOfFrames"]), int(r["FrameHeight"]), int(r["FrameWidth"]))
        assert fps == pytest.approx(float(r["FPS"]))
        masks = np.load(synth_root / "Masks" / f"{name}.npy")
        assert masks.shape == frames.shape and masks.dtype == np.uint8 and set(np.unique(masks)) == {0, 1}
        rows = [t for t in tracings if t["FileName"] == f"{name}.avi"]
        traced = sorted({int(t["Frame"]) for t in rows})
        assert len(traced) == 2
        assert all(sum(int(t["Frame"]) == f for t in rows) == 1 + NUM_CHORDS for f in traced)
        edv, esv, ef = float(r["EDV"]), float(r["ESV"]), float(r["EF"])
        assert edv > esv > 0
        assert ef == pytest.approx(100 * (edv - esv) / edv, abs=1e-3)
        assert 20 < ef < 85
        # The cavity beats: areas over the clip swing by more than a few percent.
        areas = masks.reshape(masks.shape[0], -1).sum(1)
        assert areas.max() > 1.1 * areas.min()


def test_rebuilt_masks_match_true_masks(synth_root):
    clips = load_clips(synth_root)
    assert len(clips) == SYNTH_VIDEOS
    dices = []
    for clip in clips:
        assert clip.true_masks is not None and clip.frames.shape == (SYNTH_FRAMES, 112, 112)
        assert clip.traced[clip.ed].sum() > clip.traced[clip.es].sum()
        for frame, mask in clip.traced.items():
            dices.append(_dice(mask, clip.true_masks[frame]))
        # The EF column agrees with method-of-discs volumes of the true masks.
        ef = ejection_fraction(
            volume_method_of_discs(clip.true_masks[clip.ed]), volume_method_of_discs(clip.true_masks[clip.es])
        )
        assert clip.ef == pytest.approx(ef, abs=3.0)
    assert min(dices) >= 0.95


def test_echonet_loader_convention_gets_ed_and_es_right(tmp_path):
    """EchoNet-Dynamic's loader takes the last-listed traced frame as ED and the first as ES."""
    root = generate(tmp_path, 8, frames=40, size=48, seed=5)
    read = echonet_ed_es(root / "VolumeTracings.csv")
    ours = {clip.name: (clip.ed, clip.es) for clip in load_clips(root)}
    assert sorted(read) == sorted(ours)
    ed_first = 0
    for name, (ed, es) in read.items():
        areas = np.load(root / "Masks" / f"{name}.npy").reshape(40, -1).sum(1)
        assert areas[ed] > areas[es], name  # the true cavity is larger at the frame read as ED
        assert (ed, es) == ours[name]  # our loader (by traced area) agrees
        ed_first += ed < es
    assert ed_first > 0  # some clips have ED before ES: ascending frame order would swap them


def test_ef_spans_a_realistic_range(tmp_path):
    root = generate(tmp_path, 12, frames=40, size=64, seed=3)
    efs = [float(r["EF"]) for r in _rows(root / "FileList.csv")]
    assert min(efs) < 45 and max(efs) > 60


def test_synth_command(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(tmp_path),
                "--videos",
                "2",
                "--frames",
                "12",
                "--size",
                "64",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert "wrote 2 clips" in capsys.readouterr().out
    assert len(list((tmp_path / "Videos").glob("*.avi"))) == 2
    assert len(list((tmp_path / "Masks").glob("*.npy"))) == 2


def test_generate_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="videos"):
        generate(tmp_path, 0)
    with pytest.raises(ValueError, match="size"):
        generate(tmp_path, 1, size=8)
