"""The EchoNet-Dynamic dataset layout: reading, validation and the clips it holds.

A dataset folder holds:

* ``FileList.csv``: one row per video. Columns are found by name (their order varies between
  releases): ``FileName`` (with or without ``.avi``), ``EF``, ``Split`` (TRAIN/VAL/TEST in any
  case) and optionally ``ESV``, ``EDV``, ``FrameHeight``, ``FrameWidth``, ``FPS``, ``NumberOfFrames``.
* ``VolumeTracings.csv``: ``FileName`` (with ``.avi``), ``X1, Y1, X2, Y2, Frame``; for each traced
  frame the first row is the long axis and the following rows are chords across the cavity.
* ``Videos/<FileName>.avi``: 112×112 MJPG clips, gray in three channels.
* optionally ``Masks/<FileName>.npy``: the true ``(T, H, W)`` mask of every frame (synthetic data).

End-diastole and end-systole are the traced frames with the larger and the smaller traced area
(never the row order). Problems are collected as :class:`Problem` records naming the file and
the CSV line, so ``echoseg data check`` can list them all while :func:`load_clips` refuses data
with any of them.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echoseg.config import ModelConfig
from echoseg.video import VideoError, read_video
from training.data.clip import Clip
from training.data.dataset import StoreWindowDataset
from training.data.tracings import tracing_mask

logger = logging.getLogger(__name__)

SPLITS = ("TRAIN", "VAL", "TEST")
FILELIST_COLUMNS = ("FileName", "EF", "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
MIN_TRACING_ROWS = 3  # the long axis and at least two chords make a polygon
EDGE_TOLERANCE = 1.0  # pixels a tracing may stray beyond the image border (rounding of real tracings)


@dataclass(frozen=True)
class Problem:
    """Something wrong with a dataset, located by file and (1-based) line where it applies."""

    file: str
    message: str
    line: int | None = None
    kind: str = "invalid"  # "missing" | "corrupt" | "header" | "unknown" | "range" | "outside" | "invalid"

    def __str__(self) -> str:
        where = f"{self.file}, line {self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "kind": self.kind, "message": self.message}


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; ``problems`` lists everything found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        head = "; ".join(str(p) for p in self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{len(self.problems)} problem(s) in the dataset: {head}{more}")


@dataclass
class VideoEntry:
    """One ``FileList.csv`` row."""

    name: str  # FileName without extension
    file: str  # video file name inside Videos/
    ef: float
    split: str
    line: int
    fps: float | None = None
    num_frames: int | None = None


@dataclass
class TracedFrame:
    frame: int
    coords: np.ndarray  # (N, 4) X1, Y1, X2, Y2 in file order; row 0 = long axis
    lines: list[int]  # CSV line of each row


def video_name(file_name: str) -> str:
    """``'0X1A.avi'`` and ``'0X1A'`` both name the video ``'0X1A'``."""
    name = file_name.strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def normalise_split(split: str | None) -> str | None:
    """``None``/``'all'`` -> ``None``; otherwise the upper-case split name, checked."""
    if split is None or split.strip().upper() == "ALL":
        return None
    s = split.strip().upper()
    if s not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or 'ALL' (any case), got {split!r}")
    return s


def _read_csv(
    path: Path, required: tuple[str, ...]
) -> tuple[list[tuple[int, dict[str, str]]], list[Problem]]:
    """Rows of a CSV as ``(line, row)`` keyed by header name; a missing file or column is a problem."""
    if not path.is_file():
        return [], [Problem(path.name, f"{path.name} not found in {path.parent}", kind="missing")]
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            msg = f"header lacks column(s) {missing}; found {header}, expected at least {list(required)}"
            return [], [Problem(path.name, msg, line=1, kind="header")]
        rows = [(i, dict(zip(header, r, strict=False))) for i, r in enumerate(reader, start=2) if any(r)]
    return rows, []


def _number(value: str | None, cast=float):
    try:
        return cast(float(value)) if cast is int else cast(value)
    except (TypeError, ValueError):
        return None


def read_filelist(root: Path) -> tuple[dict[str, VideoEntry], list[Problem]]:
    """``FileList.csv`` -> videos by name, and the problems found in it."""
    rows, problems = _read_csv(root / "FileList.csv", FILELIST_COLUMNS)
    entries: dict[str, VideoEntry] = {}
    for line, row in rows:
        raw = (row.get("FileName") or "").strip()
        split = (row.get("Split") or "").strip().upper()
        ef = _number(row.get("EF"))
        if not raw:
            problems.append(Problem("FileList.csv", "empty FileName", line))
            continue
        name = video_name(raw)
        if split not in SPLITS:
            problems.append(
                Problem("FileList.csv", f"{raw}: Split {row.get('Split')!r} not one of {SPLITS}", line)
            )
        if ef is None:
            problems.append(Problem("FileList.csv", f"{raw}: EF {row.get('EF')!r} is not a number", line))
        if name in entries:
            problems.append(
                Problem("FileList.csv", f"{raw} listed twice (first on line {entries[name].line})", line)
            )
            continue
        file = raw if Path(raw).suffix.lower() in (".avi", ".mp4") else f"{raw}.avi"
        entries[name] = VideoEntry(
            name=name,
            file=file,
            ef=float("nan") if ef is None else ef,
            split=split,
            line=line,
            fps=_number(row.get("FPS")),
            num_frames=_number(row.get("NumberOfFrames"), int),
        )
    return entries, problems


def read_tracings(root: Path) -> tuple[dict[str, dict[int, TracedFrame]], list[Problem]]:
    """``VolumeTracings.csv`` -> per video name, the traced frames with their rows in file order."""
    rows, problems = _read_csv(root / "VolumeTracings.csv", TRACING_COLUMNS)
    coords: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for line, row in rows:
        values = [_number(row.get(k)) for k in ("X1", "Y1", "X2", "Y2", "Frame")]
        if any(v is None for v in values) or not float(values[4]).is_integer():
            problems.append(
                Problem("VolumeTracings.csv", f"{row.get('FileName')}: non-numeric X1..Frame", line)
            )
            continue
        name = video_name(row.get("FileName") or "")
        coords[name][int(values[4])].append((line, values[:4]))
    traced = {
        name: {
            f: TracedFrame(f, np.array([v for _, v in rs], dtype=np.float64), [ln for ln, _ in rs])
            for f, rs in sorted(frames.items())
        }
        for name, frames in coords.items()
    }
    return traced, problems


def tracing_problems(name: str, traced: dict[int, TracedFrame], shape: tuple[int, int, int]) -> list[Problem]:
    """Frames out of range, too few rows, points outside the image; ``shape`` is the video's (T, H, W)."""
    num_frames, height, width = shape
    problems = []
    for f, tf in traced.items():
        if not 0 <= f < num_frames:
            msg = f"{name}: traced frame {f} outside the video's {num_frames} frames (0..{num_frames - 1})"
            problems.append(Problem("VolumeTracings.csv", msg, tf.lines[0], kind="range"))
        if len(tf.lines) < MIN_TRACING_ROWS:
            msg = f"{name}: frame {f} has {len(tf.lines)} tracing row(s), needs at least {MIN_TRACING_ROWS}"
            problems.append(Problem("VolumeTracings.csv", msg, tf.lines[0]))
        xs, ys = tf.coords[:, [0, 2]], tf.coords[:, [1, 3]]
        bad = (
            (xs < -EDGE_TOLERANCE).any(axis=1)
            | (xs > width - 1 + EDGE_TOLERANCE).any(axis=1)
            | (ys < -EDGE_TOLERANCE).any(axis=1)
            | (ys > height - 1 + EDGE_TOLERANCE).any(axis=1)
        )
        for i in np.flatnonzero(bad):
            x1, y1, x2, y2 = tf.coords[i]
            msg = (
                f"{name}: frame {f} tracing ({x1:g}, {y1:g})-({x2:g}, {y2:g}) lies outside the "
                f"{width}x{height} frame"
            )
            problems.append(Problem("VolumeTracings.csv", msg, tf.lines[i], kind="outside"))
    return problems


def traced_masks(traced: dict[int, TracedFrame], height: int, width: int) -> dict[int, np.ndarray]:
    """Mask of every traced frame: frame -> ``(height, width) uint8``."""
    return {f: tracing_mask(tf.coords, height, width) for f, tf in traced.items() if len(tf.lines) >= 2}


def ed_es(masks: dict[int, np.ndarray]) -> tuple[int, int]:
    """End-diastole = the traced frame with the largest area, end-systole = the smallest (-1 if < 2)."""
    if len(masks) < 2:
        return -1, -1
    areas = {f: int(m.sum()) for f, m in masks.items()}
    return max(areas, key=areas.get), min(areas, key=areas.get)


def structure_problems(root: Path) -> list[Problem]:
    if not root.is_dir():
        return [Problem(str(root), "dataset folder not found", kind="missing")]
    if not (root / "Videos").is_dir():
        return [Problem("Videos", f"Videos/ folder not found in {root}", kind="missing")]
    return []


@dataclass
class EchoNetIndex:
    """What the CSVs of a dataset folder say, before any video is decoded."""

    root: Path
    videos: dict[str, VideoEntry]
    tracings: dict[str, dict[int, TracedFrame]]
    problems: list[Problem]

    def video_path(self, name: str) -> Path:
        return self.root / "Videos" / self.videos[name].file

    def names(self, split: str | None = None) -> list[str]:
        s = normalise_split(split)
        return [n for n, e in self.videos.items() if s is None or e.split == s]

    def unknown_tracings(self) -> list[Problem]:
        out = []
        for name in sorted(set(self.tracings) - set(self.videos)):
            first = min(tf.lines[0] for tf in self.tracings[name].values())
            msg = f"tracings for {name}.avi, which FileList.csv does not list"
            out.append(Problem("VolumeTracings.csv", msg, first, kind="unknown"))
        return out


def read_index(root) -> EchoNetIndex:
    """Parse ``FileList.csv`` and ``VolumeTracings.csv`` of ``root`` (no video is decoded)."""
    root = Path(root)
    problems = structure_problems(root)
    if problems and problems[0].file == str(root):
        return EchoNetIndex(root, {}, {}, problems)
    videos, p1 = read_filelist(root)
    tracings, p2 = read_tracings(root)
    return EchoNetIndex(root, videos, tracings, problems + p1 + p2)


def load_video(index: EchoNetIndex, name: str) -> tuple[np.ndarray, float]:
    """Decode one listed video: ``-> (frames (T, H, W) uint8, fps)``."""
    path = index.video_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"{name}: video listed in FileList.csv (line {index.videos[name].line}) not found: {path}"
        )
    frames, fps = read_video(path)
    return frames, fps if fps > 0 else (index.videos[name].fps or 50.0)


def load_true_masks(root: Path, name: str, shape: tuple[int, int, int]) -> np.ndarray | None:
    path = root / "Masks" / f"{name}.npy"
    if not path.is_file():
        return None
    masks = np.load(path)
    if masks.shape != shape:
        raise ValueError(f"{path}: masks of shape {masks.shape} do not match the video's {shape}")
    return (masks > 0).astype(np.uint8)


def _raise(problems: list[Problem]) -> None:
    if any(p.kind == "missing" for p in problems):
        raise FileNotFoundError("; ".join(str(p) for p in problems))
    if problems:
        raise DatasetError(problems)


def load_clip(index: EchoNetIndex, name: str) -> Clip:
    """Decode one video and build its traced masks; raises on any problem with it."""
    entry = index.videos[name]
    try:
        frames, fps = load_video(index, name)
    except VideoError as exc:
        raise VideoError(f"{entry.file} (FileList.csv line {entry.line}): {exc}") from exc
    traced = index.tracings.get(name, {})
    _raise(tracing_problems(name, traced, frames.shape))
    masks = traced_masks(traced, frames.shape[1], frames.shape[2])
    ed, es = ed_es(masks)
    if ed < 0:
        logger.warning("%s has %d traced frame(s); ED/ES unknown", name, len(masks))
    return Clip(
        name=name,
        frames=frames,
        fps=fps,
        ef=entry.ef,
        split=entry.split,
        traced=masks,
        ed=ed,
        es=es,
        true_masks=load_true_masks(index.root, name, frames.shape),
    )


def load_clips(root, split: str | None = None) -> list[Clip]:
    """All clips of ``split`` (TRAIN/VAL/TEST in any case; ``None`` or ``'all'`` for every split).

    Raises ``FileNotFoundError`` for a missing CSV, ``Videos/`` folder or listed video,
    :class:`~echoseg.video.VideoError` for a corrupt video, :class:`DatasetError`
    (a ``ValueError``) for a wrong header or a tracing outside its frame; each message names the
    file and the CSV line. Tracings of videos absent from ``FileList.csv`` are ignored with a warning.
    The whole split is held in memory: use :func:`iter_clips` (or a frame store) for large splits.
    """
    clips = list(iter_clips(root, split))
    logger.info("loaded %d clips (%s) from %s", len(clips), normalise_split(split) or "all splits", root)
    return clips


def iter_clips(root, split: str | None = None):
    """The clips of ``split`` one at a time, checked like :func:`load_clips` before the first is decoded."""
    index = read_index(root)
    _raise(index.problems)
    for p in index.unknown_tracings():
        logger.warning("%s (ignored)", p)
    for name in index.names(split):
        yield load_clip(index, name)


class EchoNetDataset(StoreWindowDataset):
    """Labelled or unlabelled training windows from an EchoNet-Dynamic folder or its frame store.

    ``root`` is the dataset folder (its frame store, ``store`` or the default cache folder, is
    prepared on first use and refreshed when the source changed) or a prepared store. Each window
    reads its k frames from the store; nothing is kept in memory per video.
    """

    def __init__(
        self,
        root,
        split: str | None,
        config: ModelConfig,
        mode: str = "labelled",
        augment: bool = False,
        seed: int = 0,
        windows_per_video: int = 8,
        store=None,
    ):
        from training.data.store import ensure_store

        frame_store = ensure_store(root, store, progress=False)
        super().__init__(
            frame_store,
            split,
            config,
            mode=mode,
            augment=augment,
            seed=seed,
            windows_per_video=windows_per_video,
        )
        logger.info(
            "%s %s windows from %d videos (%s)",
            len(self),
            mode,
            len(self.names),
            normalise_split(split) or "all",
        )
