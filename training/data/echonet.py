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
import hashlib
import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echoseg.video import VideoError, read_video
from training.data.base import (
    SPLITS,
    DataSource,
    PlannedClip,
    Problem,
    check_report,
    compare_true,
    normalise_split,
    raise_problems,
)
from training.data.base import (
    DatasetError as DatasetError,  # re-exported: the error load_clips raises
)
from training.data.clip import Clip
from training.data.tracings import tracing_mask

logger = logging.getLogger(__name__)

FILELIST_COLUMNS = ("FileName", "EF", "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
MIN_TRACING_ROWS = 3  # the long axis and at least two chords make a polygon
EDGE_TOLERANCE = 1.0  # pixels a tracing may stray beyond the image border (rounding of real tracings)


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


def rows_outside(coords: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(n,)`` bool: which tracing rows ``(n, 4)`` X1, Y1, X2, Y2 have a point outside the
    ``width`` x ``height`` frame (beyond :data:`EDGE_TOLERANCE`)."""
    xs, ys = coords[:, [0, 2]], coords[:, [1, 3]]
    return (
        (xs < -EDGE_TOLERANCE).any(axis=1)
        | (xs > width - 1 + EDGE_TOLERANCE).any(axis=1)
        | (ys < -EDGE_TOLERANCE).any(axis=1)
        | (ys > height - 1 + EDGE_TOLERANCE).any(axis=1)
    )


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
        for i in np.flatnonzero(rows_outside(tf.coords, height, width)):
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


def load_clip(index: EchoNetIndex, name: str) -> Clip:
    """Decode one video and build its traced masks; raises on any problem with it."""
    entry = index.videos[name]
    try:
        frames, fps = load_video(index, name)
    except VideoError as exc:
        raise VideoError(f"{entry.file} (FileList.csv line {entry.line}): {exc}") from exc
    traced = index.tracings.get(name, {})
    raise_problems(tracing_problems(name, traced, frames.shape))
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
    source = EchoNetSource(root)
    source.require_usable()
    for name in source.names(split):
        yield source.load(name)


# -- the source ---------------------------------------------------------------------------------
class EchoNetSource(DataSource):
    """An EchoNet-Dynamic folder as a :class:`~training.data.base.DataSource`; the CSVs are read once."""

    kind = "echonet"
    description = "EchoNet-Dynamic (FileList.csv, VolumeTracings.csv, Videos/)"

    def __init__(self, root) -> None:
        super().__init__(root)
        self.index = read_index(self.root)

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "FileList.csv").is_file() or (root / "VolumeTracings.csv").is_file()

    def names(self, split: str | None = None) -> list[str]:
        return self.index.names(split)

    def load(self, name: str) -> Clip:
        return load_clip(self.index, name)

    def problems(self) -> list[Problem]:
        return list(self.index.problems)

    def warnings(self) -> list[Problem]:
        return self.index.unknown_tracings()

    def plan(self) -> list[PlannedClip]:
        planned = []
        for name in self.index.names():
            files = [self.index.video_path(name)]
            masks = self.root / "Masks" / f"{name}.npy"
            if masks.is_file():
                files.append(masks)
            expected = self.index.videos[name].num_frames
            planned.append(PlannedClip(name, files, self._meta_digest(name), expected_frames=expected))
        return planned

    def _meta_digest(self, name: str) -> str:
        """A digest of the clip's CSV rows (split, EF, tracings): a change re-decodes the clip."""
        e = self.index.videos[name]
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([e.file, e.split, e.ef, e.fps, e.num_frames]).encode())
        for f, tf in sorted(self.index.tracings.get(name, {}).items()):
            h.update(str(f).encode())
            h.update(np.ascontiguousarray(tf.coords, dtype=np.float64).tobytes())
        return h.hexdigest()

    def check(self) -> dict:
        index = self.index
        problems = [*self.problems(), *self.warnings()]
        warnings: list[Problem] = []
        videos = [check_video(index, name, problems, warnings) for name in index.videos]
        if (self.root / "Videos").is_dir():
            listed = {e.file.lower() for e in index.videos.values()}
            for path in sorted((self.root / "Videos").iterdir()):
                if path.is_file() and path.name.lower() not in listed:
                    warnings.append(Problem(f"Videos/{path.name}", "not listed in FileList.csv"))
        counts = Counter(e.split for e in index.videos.values())
        return check_report(self.root, self.kind, counts, videos, problems, warnings)


def _frame_counts(index: EchoNetIndex, name: str, shape, problems: list[Problem]) -> None:
    entry = index.videos[name]
    declared = {"NumberOfFrames": (entry.num_frames, shape[0])}
    for column, (listed, actual) in declared.items():
        if listed is not None and listed != actual:
            msg = f"{entry.file}: {column} {listed} but the video has {actual}"
            problems.append(Problem("FileList.csv", msg, entry.line))


def check_video(index: EchoNetIndex, name: str, problems: list[Problem], warnings: list[Problem]) -> dict:
    """One video of ``echoseg data check``: its record, with problems and warnings appended."""
    entry = index.videos[name]
    record = {"name": name, "split": entry.split, "line": entry.line, "status": "ok"}
    path = index.video_path(name)
    where = f"Videos/{entry.file}"
    if not path.is_file():
        problems.append(Problem(where, "listed in FileList.csv but not found", entry.line, "missing"))
        return {**record, "status": "missing"}
    try:
        frames, fps = read_video(path)
    except VideoError as exc:
        problems.append(Problem(where, f"corrupt or unreadable video ({exc})", entry.line, "corrupt"))
        return {**record, "status": "corrupt"}
    t, h, w = frames.shape
    _frame_counts(index, name, frames.shape, problems)
    traced = index.tracings.get(name, {})
    found = tracing_problems(name, traced, frames.shape)
    problems += found
    masks = {f: m for f, m in traced_masks(traced, h, w).items() if 0 <= f < t}
    ed, es = ed_es(masks)
    record.update(frames=t, height=h, width=w, fps=round(fps, 3), traced_frames=sorted(traced), ed=ed, es=es)
    record.update(
        ed_area=int(masks[ed].sum()) if ed >= 0 else None, es_area=int(masks[es].sum()) if es >= 0 else None
    )
    if found:
        record["status"] = "invalid"
    if len(masks) < 2:
        warnings.append(
            Problem(where, f"{len(masks)} usable traced frame(s); ED/ES unknown, not used for training")
        )
    try:
        true = load_true_masks(index.root, name, frames.shape)
    except ValueError as exc:
        problems.append(Problem(f"Masks/{name}.npy", str(exc)))
        true = None
    if true is not None and masks and ed >= 0:
        record["true"] = compare_true(record, masks, true)
        if not record["true"]["agrees"]:
            problems.append(Problem(where, f"tracings disagree with Masks/{name}.npy: {record['true']}"))
    return record
