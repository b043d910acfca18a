import sys

import numpy as np
import pytest

SimpleITK = pytest.importorskip("SimpleITK")

from training.data import camus  # noqa: E402
from training.data.camus import load_camus  # noqa: E402
from training.data.check import check_dataset  # noqa: E402
from training.data.echonet import DatasetError  # noqa: E402

H, W, T = 40, 32, 6
SPACING = (0.31, 0.154)  # (row, column) in mm, deliberately different


def _labels(t: int) -> np.ndarray:
    """Label map of frame ``t``: LV cavity (1) shrinking over time, myocardium (2), atrium (3)."""
    gt = np.zeros((H, W), dtype=np.uint8)
    gt[4:34, 6:26] = 2
    gt[8 : 30 - t, 10 : 22 - t // 2] = 1
    gt[34:39, 10:22] = 3
    return gt


def _frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 60, (T, H, W))).astype(np.uint8)
    for t in range(T):
        images[t][_labels(t) == 2] = 200 - t
    return images  # (T, H, W)


def _write(array: np.ndarray, path) -> None:
    image = SimpleITK.GetImageFromArray(array)
    image.SetSpacing((SPACING[1], SPACING[0], 1.0)[: image.GetDimension()])
    SimpleITK.WriteImage(image, str(path))


def _make_patient(root, patient: str, release: str, info: bool = True):
    folder = root / patient
    folder.mkdir(parents=True)
    frames = _frames()
    gts = np.stack([_labels(t) for t in range(T)])
    ext = ".mhd" if release == "mhd" else ".nii.gz"
    for view in camus.VIEWS:
        stem = f"{patient}_{view}"
        _write(frames[0], folder / f"{stem}_ED{ext}")
        _write(gts[0], folder / f"{stem}_ED_gt{ext}")
        _write(frames[T - 1], folder / f"{stem}_ES{ext}")
        _write(gts[T - 1], folder / f"{stem}_ES_gt{ext}")
        if release == "mhd":
            _write(frames, folder / f"{stem}_sequence{ext}")
        else:
            _write(frames, folder / f"{stem}_half_sequence{ext}")
            _write(gts, folder / f"{stem}_half_sequence_gt{ext}")
        if info:
            (folder / f"Info_{view}.cfg").write_text(
                f"ED: 1\nES: {T}\nNbFrame: {T}\nSex: F\nAge: 60\nLVef: 47.5\n"
            )
    return folder


@pytest.mark.parametrize("release", ["mhd", "nifti"])
def test_both_releases_load(tmp_path, release):
    _make_patient(tmp_path / "training", "patient0001", release)
    _make_patient(tmp_path / "training", "patient0460", release, info=False)
    if release == "mhd":
        assert (tmp_path / "training" / "patient0001" / "patient0001_2CH_ED.raw").is_file()
    clips = load_camus(tmp_path)
    assert [c.name for c in clips] == [
        "patient0001_2CH",
        "patient0001_4CH",
        "patient0460_2CH",
        "patient0460_4CH",
    ]
    frames = _frames()
    for clip in clips:
        np.testing.assert_array_equal(clip.frames, frames)
        assert clip.spacing == pytest.approx(SPACING)
        assert (clip.ed, clip.es) == (0, T - 1)  # from Info_*.cfg, or by matching the ED/ES images
        np.testing.assert_array_equal(clip.traced[0], (_labels(0) == 1).astype(np.uint8))
        np.testing.assert_array_equal(clip.traced[T - 1], (_labels(T - 1) == 1).astype(np.uint8))
        if release == "nifti":
            expected = np.stack([_labels(t) == 1 for t in range(T)]).astype(np.uint8)
            np.testing.assert_array_equal(clip.true_masks, expected)
        else:
            assert clip.true_masks is None
    assert clips[0].split == "TRAIN" and clips[2].split == "TEST"
    assert clips[0].ef == pytest.approx(47.5) and np.isnan(clips[2].ef)
    assert [c.name for c in load_camus(tmp_path, views=("4CH",))] == ["patient0001_4CH", "patient0460_4CH"]
    with pytest.raises(ValueError, match="2CH"):
        load_camus(tmp_path, views=("3CH",))


def test_check_reports_camus_and_names_a_missing_file(tmp_path):
    folder = _make_patient(tmp_path, "patient0002", "nifti")
    report = check_dataset(tmp_path)
    assert report["layout"] == "camus" and report["ok"], report["problems"]
    video = report["videos"][0]
    assert (video["ed"], video["es"]) == (0, T - 1)
    assert video["ed_area"] == int((_labels(0) == 1).sum()) and video["true"]["agrees"]
    (folder / "patient0002_4CH_ES_gt.nii.gz").unlink()
    report = check_dataset(tmp_path)
    assert not report["ok"]
    assert any("patient0002_4CH_ES_gt" in p["file"] for p in report["problems"])
    with pytest.raises(DatasetError, match="patient0002_4CH_ES_gt"):
        load_camus(tmp_path)


def test_missing_simpleitk_names_the_extra(tmp_path, monkeypatch):
    _make_patient(tmp_path, "patient0003", "mhd")
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(ImportError, match="camus"):
        load_camus(tmp_path)
