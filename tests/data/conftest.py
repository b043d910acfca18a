"""Fixtures for the data tests: a small synthetic dataset and a builder of hand-made EchoNet folders."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from echoseg.video import write_avi
from training.data.synthetic import FILELIST_HEADER, generate

SYNTH_VIDEOS = 6
SYNTH_FRAMES = 48


@pytest.fixture(autouse=True)
def _store_cache(tmp_path_factory, monkeypatch):
    """Frame stores prepared on first use go to a temporary folder, never to ~/.cache."""
    monkeypatch.setenv("ECHOSEG_CACHE", str(tmp_path_factory.getbasetemp() / "echoseg-cache"))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A generated dataset shared by the tests that only read it."""
    return generate(tmp_path_factory.mktemp("synth"), SYNTH_VIDEOS, frames=SYNTH_FRAMES, seed=7)


@pytest.fixture
def synth_copy(synth_root, tmp_path) -> Path:
    """A private copy of the generated dataset, for tests that plant faults in it."""
    return Path(shutil.copytree(synth_root, tmp_path / "synth"))


def rect_tracing(x0: float, x1: float, y0: float, y1: float, chords: int = 6) -> list[list[float]]:
    """Tracing rows of a rectangle: the long axis, then ``chords`` horizontal chords from y0 to y1."""
    rows = [[(x0 + x1) / 2, y0, (x0 + x1) / 2, y1]]
    rows += [[x0, y, x1, y] for y in np.linspace(y0, y1, chords)]
    return rows


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def make_echonet(
    root: Path,
    videos: dict[str, dict],
    header: tuple[str, ...] = FILELIST_HEADER,
    avi_in_filelist: bool = False,
) -> Path:
    """Write a hand-made EchoNet-Dynamic folder.

    ``videos[name]`` has ``frames`` (T, H, W) uint8, ``split``, ``ef`` and ``tracings``: a list of
    ``(frame, rows)`` written in that order (rows = [[X1, Y1, X2, Y2], ...], first = long axis).
    """
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    filelist, tracings = [], []
    for name, v in videos.items():
        frames = v["frames"]
        write_avi(root / "Videos" / f"{name}.avi", frames, fps=50.0)
        values = {
            "FileName": f"{name}.avi" if avi_in_filelist else name,
            "EF": v.get("ef", 55.0),
            "ESV": 30.0,
            "EDV": 70.0,
            "FrameHeight": frames.shape[1],
            "FrameWidth": frames.shape[2],
            "FPS": 50,
            "NumberOfFrames": frames.shape[0],
            "Split": v.get("split", "TRAIN"),
        }
        filelist.append([values.get(h, "x") for h in header])
        for frame, rows in v.get("tracings", []):
            tracings += [[f"{name}.avi", *row, frame] for row in rows]
    write_csv(root / "FileList.csv", list(header), filelist)
    write_csv(root / "VolumeTracings.csv", ["FileName", "X1", "Y1", "X2", "Y2", "Frame"], tracings)
    return root


def echonet_ed_es(tracings_csv: Path) -> dict[str, tuple[int, int]]:
    """ED and ES frame per video as EchoNet-Dynamic's own loader (``echonet/datasets/echo.py``) reads them.

    It lists each video's traced frames in the order they first appear in ``VolumeTracings.csv``
    and takes the last-listed as end-diastole (``LargeFrame``), the first-listed as end-systole
    (``SmallFrame``). Keys are FileName without ``.avi``.
    """
    order: dict[str, list[int]] = {}
    with open(tracings_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            frames = order.setdefault(row["FileName"].removesuffix(".avi"), [])
            if int(row["Frame"]) not in frames:
                frames.append(int(row["Frame"]))
    return {name: (frames[-1], frames[0]) for name, frames in order.items()}


def moving_square_frames(num_frames: int = 10, size: int = 64) -> np.ndarray:
    """``(T, size, size)`` uint8 frames with a bright square whose position encodes the frame index."""
    frames = np.zeros((num_frames, size, size), dtype=np.uint8)
    for t in range(num_frames):
        frames[t, 10 + t : 20 + t, 10:20] = 200
    return frames
