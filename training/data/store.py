"""The frame store: every clip of a dataset decoded once into memory-mappable uint8 arrays.

Training reads a few frames per window from thousands of clips, many times. Decoding a whole
MJPG video to use three of its frames, and keeping decoded clips in per-worker dictionaries,
does not scale to EchoNet-Dynamic (10,030 clips). ``echoseg data prepare DATA --out STORE``
decodes each clip once, at its native size, into this layout::

    STORE/
      store.json           format version, the source (kind, folder), one record per clip
      frames/<name>.npy    (T, H, W) uint8, every frame of the clip
      traced/<name>.npy    (n, H, W) uint8, the masks of the clip's n traced frames
      true/<name>.npy      (T, H, W) uint8, per-frame ground truth where the source has it

A window then costs one ``pread`` of its k consecutive frames (:meth:`FrameStore.read_frames`):
nothing is mapped or cached by the process, so the operating system's page cache, shared by every
worker and every run, holds what is hot. Resizing and augmentation happen per window.

Each record carries what it was made from: the source files' sizes and modification times, a
digest of the clip's CSV rows (split, EF, tracings) and a digest of the files' bytes. Preparing
again (explicitly, or when training opens the store) skips clips whose sources are unchanged and
rebuilds the others, so a stale store is rebuilt rather than silently used. Frame counts are
checked against ``FileList.csv`` (``NumberOfFrames``) and every array file against its record.

The same layout holds CAMUS (``training.data.camus``): one clip per patient and view.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from training.data.base import DatasetError, DataSource, PlannedClip, Problem, normalise_split
from training.data.clip import Clip
from training.data.sources import detect_kind, open_source

logger = logging.getLogger(__name__)

FORMAT = "echoseg-frame-store"
VERSION = 1
INDEX = "store.json"
CHECKPOINT_EVERY = 100  # clips between rewrites of store.json while preparing (an interrupted run resumes)
MAX_FRAMES = 100_000  # refuse absurd clips (a corrupt header) before allocating for them
MAX_PIXELS = 4096 * 4096


class StoreError(ValueError):
    """A frame store that is missing, unreadable or does not match its files."""


@dataclass
class ClipRecord:
    """One clip of a store: what the dataset says about it, and what it was made from."""

    name: str
    split: str
    ef: float
    fps: float
    num_frames: int
    height: int
    width: int
    ed: int = -1
    es: int = -1
    traced: list[int] = field(default_factory=list)  # traced frame numbers, in traced/<name>.npy order
    has_true: bool = False
    spacing: tuple[float, float] = (1.0, 1.0)
    sources: dict[str, list[int]] = field(default_factory=dict)  # relative path -> [size, mtime_ns]
    meta_digest: str = ""  # the clip's CSV rows (EchoNet); empty for CAMUS
    content_digest: str = ""  # blake2b of the source files' bytes and meta_digest

    @classmethod
    def from_dict(cls, d: dict) -> ClipRecord:
        d = dict(d)
        d["spacing"] = tuple(d.get("spacing", (1.0, 1.0)))
        return cls(**d)

    @property
    def frame_bytes(self) -> int:
        return self.height * self.width


# -- sources: what a store is made from ------------------------------------------------------------
def _stat(root: Path, paths: list[Path]) -> dict[str, list[int]]:
    """``relative path -> [size, mtime_ns]`` of the files that exist (decoding reports a missing one)."""
    out = {}
    for p in paths:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        out[str(p.relative_to(root))] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def _digest_files(root: Path, rel_paths, extra: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(extra.encode())
    for rel in sorted(rel_paths):
        h.update(rel.encode())
        with open(root / rel, "rb") as fh:
            h.update(hashlib.file_digest(fh, "blake2b").digest())
    return h.hexdigest()


@dataclass
class _Task:
    """One clip to decode, as sent to a worker process."""

    name: str
    store: str
    meta_digest: str
    sources: dict[str, list[int]]
    content_digest: str
    expected_frames: int | None = None


# -- decoding one clip (runs in a worker process) ----------------------------------------------
_WORKER: dict = {}


def _init_worker(root: str) -> None:
    _WORKER.clear()
    _WORKER["source"] = open_source(root)  # each worker reads the source's index once


def _save_array(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.ascontiguousarray(array, dtype=np.uint8))
    os.replace(tmp, path)


def _prepare_one(task: _Task) -> tuple[str, dict | None, str | None]:
    """Decode one clip and write its arrays; ``-> (name, record dict or None, error or None)``."""
    name = task.name
    try:
        clip = _WORKER["source"].load(name)
    except (ValueError, OSError) as exc:  # VideoError, DatasetError, FileNotFoundError
        return name, None, f"{type(exc).__name__}: {exc}"
    frames = clip.frames
    t, h, w = frames.shape
    if t > MAX_FRAMES or h * w > MAX_PIXELS:
        return name, None, f"clip of {t} frames of {h}x{w} exceeds the store's limits"
    if task.expected_frames is not None and task.expected_frames != t:
        logger.warning("%s: FileList.csv says %d frames, the video has %d", name, task.expected_frames, t)
    store = Path(task.store)
    traced = sorted(clip.traced)
    _save_array(store / "frames" / f"{name}.npy", frames)
    stack = np.stack([clip.traced[f] for f in traced]) if traced else np.zeros((0, h, w), np.uint8)
    _save_array(store / "traced" / f"{name}.npy", stack)
    if clip.true_masks is not None:
        _save_array(store / "true" / f"{name}.npy", clip.true_masks)
    record = ClipRecord(
        name=name,
        split=clip.split,
        ef=float(clip.ef),
        fps=float(clip.fps),
        num_frames=t,
        height=h,
        width=w,
        ed=int(clip.ed),
        es=int(clip.es),
        traced=[int(f) for f in traced],
        has_true=clip.true_masks is not None,
        spacing=tuple(float(s) for s in clip.spacing),
        sources=task.sources,
        meta_digest=task.meta_digest,
        content_digest=task.content_digest,
    )
    return name, asdict(record), None


# -- preparing ----------------------------------------------------------------------------------
@dataclass
class PrepareReport:
    """What :func:`prepare` did: clips decoded, kept as they were, dropped; problems; seconds."""

    store: Path
    decoded: int = 0
    unchanged: int = 0
    removed: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["store"] = str(self.store)
        return d


@contextlib.contextmanager
def _locked(store: Path):
    store.mkdir(parents=True, exist_ok=True)
    with open(store / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # another process preparing the same store finishes first
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_index(store: Path) -> dict:
    path = store / INDEX
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable store index ({exc})") from exc
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise StoreError(
            f"{path}: not a version-{VERSION} {FORMAT} (found {doc.get('format')!r} v{doc.get('version')!r})"
        )
    return doc


def _write_index(store: Path, source: DataSource, records: dict[str, dict]) -> None:
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "source": {"kind": source.kind, "root": str(source.root)},
        "clips": [records[n] for n in sorted(records)],
    }
    tmp = store / (INDEX + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, store / INDEX)


def _arrays_present(store: Path, rec: dict) -> bool:
    try:
        check_arrays(store, ClipRecord.from_dict(rec))
    except StoreError:
        return False
    return True


def _unchanged(store: Path, root: Path, plan: PlannedClip, old: dict | None, verify: bool):
    """``(unchanged?, sources, content digest)`` of a planned clip against its old record."""
    sources = _stat(root, plan.files)
    if old is None or old.get("meta_digest") != plan.meta_digest or not _arrays_present(store, old):
        return False, sources, None
    if old.get("sources") == sources and not verify:
        return True, sources, old.get("content_digest")
    digest = _digest_files(root, sources, plan.meta_digest)  # touched or re-verified: compare bytes
    return digest == old.get("content_digest"), sources, digest


def prepare(source, store, workers: int = 1, verify: bool = False, progress: bool = False) -> PrepareReport:
    """Decode every clip of ``source`` (EchoNet-Dynamic or CAMUS folder) into the store ``store``.

    Clips already in the store with unchanged sources are kept (``verify`` re-hashes their files
    instead of trusting sizes and modification times); the others are decoded, ``workers`` at a
    time. Clips no longer in the source are dropped from the index. ``store.json`` is rewritten
    every :data:`CHECKPOINT_EVERY` clips, so an interrupted run resumes where it stopped. Clips
    that cannot be read are listed in ``report.problems`` and left out; :func:`ensure_store`
    raises on them.
    """
    from tqdm import tqdm

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    source = open_source(Path(source).resolve())
    store = Path(store).resolve()
    source.require_usable()
    start = time.perf_counter()
    report = PrepareReport(store)
    with _locked(store):
        try:
            old = {r["name"]: r for r in _read_index(store)["clips"]}
        except (FileNotFoundError, StoreError):
            old = {}
        planned = source.plan()
        records: dict[str, dict] = {}
        tasks = []
        for plan in planned:
            same, sources, digest = _unchanged(store, source.root, plan, old.get(plan.name), verify)
            if same:
                records[plan.name] = {**old[plan.name], "sources": sources}
                report.unchanged += 1
            else:
                digest = digest or _digest_files(source.root, sources, plan.meta_digest)
                tasks.append(
                    _Task(plan.name, str(store), plan.meta_digest, sources, digest, plan.expected_frames)
                )
        report.removed = len(set(old) - {p.name for p in planned})
        for name in set(old) - {p.name for p in planned}:
            for sub in ("frames", "traced", "true"):
                (store / sub / f"{name}.npy").unlink(missing_ok=True)
        if tasks:
            n = len(planned)
            logger.info("decoding %d of %d clips into %s (%d workers)", len(tasks), n, store, workers)
        bar = tqdm(total=len(tasks), desc="prepare", unit="clip", disable=not progress, dynamic_ncols=True)
        for i, (name, record, error) in enumerate(_run(tasks, source.root, workers), start=1):
            bar.update(1)
            if error is not None:
                report.problems.append(f"{name}: {error}")
                continue
            records[name] = record
            report.decoded += 1
            if i % CHECKPOINT_EVERY == 0:  # clips not yet (re)decoded are left out until they are
                _write_index(store, source, records)
        bar.close()
        _write_index(store, source, records)
    report.seconds = time.perf_counter() - start
    report.bytes = store_bytes(store)
    logger.info(
        "store %s: %d decoded, %d unchanged, %d removed, %d problem(s), %.1f s, %.1f MB",
        store,
        report.decoded,
        report.unchanged,
        report.removed,
        len(report.problems),
        report.seconds,
        report.bytes / 1e6,
    )
    return report


def _run(tasks, source: Path, workers: int) -> Iterator[tuple[str, dict | None, str | None]]:
    """Results of :func:`_prepare_one` over ``tasks``, in order; a process pool when ``workers`` > 1."""
    if workers == 1 or len(tasks) <= 1:
        _init_worker(str(source))
        yield from map(_prepare_one, tasks)
        return
    # map() keeps at most ~workers * chunksize clips in flight: memory is a few decoded clips per worker.
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(str(source),)) as pool:
        yield from pool.map(_prepare_one, tasks, chunksize=1)


def store_bytes(store) -> int:
    store = Path(store)
    return sum(p.stat().st_size for sub in ("frames", "traced", "true") for p in (store / sub).glob("*.npy"))


def default_store_dir(source) -> Path:
    """Where a dataset's store lives when none is named: ``$ECHOSEG_CACHE`` or ``~/.cache/echoseg``."""
    base = Path(os.environ.get("ECHOSEG_CACHE") or Path.home() / ".cache" / "echoseg")
    source = Path(source).resolve()
    key = hashlib.blake2b(str(source).encode(), digest_size=6).hexdigest()
    return base / "stores" / f"{source.name}-{key}"


def is_store(path) -> bool:
    return (Path(path) / INDEX).is_file()


def ensure_store(root, store=None, workers: int = 1, progress: bool = True) -> FrameStore:
    """The frame store of ``root``, prepared or refreshed as needed.

    ``root`` is a store (refreshed from its recorded source when that folder is reachable) or a
    dataset folder (its store is ``store``, default :func:`default_store_dir`). Raises
    :class:`~training.data.base.DatasetError` when a clip cannot be read.
    """
    root = Path(root)
    if is_store(root):
        store, source = root, Path(_read_index(root)["source"]["root"])
        if detect_kind(source) is None:
            logger.info("store %s: source %s not reachable; using the store as it is", store, source)
            return FrameStore(store)
    else:
        source, store = root, Path(store) if store is not None else default_store_dir(root)
    report = prepare(source, store, workers=workers, progress=progress)
    if report.problems:
        raise DatasetError([Problem(str(source), p, kind="corrupt") for p in report.problems])
    return FrameStore(store)


# -- reading ------------------------------------------------------------------------------------
def _npy_offset(path: Path) -> tuple[int, tuple[int, ...]]:
    """Header length and shape of a uint8 C-order ``.npy`` file."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            raise StoreError(f"{path}: unsupported .npy version {version}")
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    if dtype != np.uint8 or fortran:
        raise StoreError(f"{path}: expected a C-order uint8 array, found {dtype} (fortran={fortran})")
    return offset, tuple(shape)


def check_arrays(store: Path, rec: ClipRecord) -> dict[str, int]:
    """Header offsets of the clip's arrays, after checking their shapes and sizes against the record."""
    t, h, w = rec.num_frames, rec.height, rec.width
    if not (0 < t <= MAX_FRAMES and 0 < h * w <= MAX_PIXELS):
        raise StoreError(f"{rec.name}: record of {t} frames of {h}x{w} is out of range")
    expected = {"frames": (t, h, w), "traced": (len(rec.traced), h, w)}
    if rec.has_true:
        expected["true"] = (t, h, w)
    offsets = {}
    for sub, shape in expected.items():
        path = store / sub / f"{rec.name}.npy"
        try:
            offset, found = _npy_offset(path)
            size = path.stat().st_size
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: cannot read ({exc})") from exc
        if found != shape or size != offset + int(np.prod(shape)):
            raise StoreError(f"{path}: holds {found} in {size} bytes; the index says {shape}: prepare again")
        offsets[sub] = offset
    return offsets


class FrameStore:
    """A prepared store, opened for reading: records by name and frame reads that cache nothing.

    Opening reads ``store.json`` and checks every array file's header and size against its record
    (a truncated or replaced file is an error naming it). Reads go through ``os.pread``: the
    process keeps no mapping and no copy, so its memory does not grow with the data it has seen.
    """

    def __init__(self, path):
        self.path = Path(path)
        try:
            doc = _read_index(self.path)
        except FileNotFoundError:
            msg = f"{self.path} is not a frame store (no {INDEX}); run `echoseg data prepare`"
            raise StoreError(msg) from None
        self.source = doc["source"]
        self.records = {r["name"]: ClipRecord.from_dict(r) for r in doc["clips"]}
        self._offsets = {name: check_arrays(self.path, rec) for name, rec in self.records.items()}

    def __len__(self) -> int:
        return len(self.records)

    def names(self, split: str | None = None) -> list[str]:
        s = normalise_split(split)
        return [n for n, r in self.records.items() if s is None or r.split == s]

    def _pread(self, sub: str, name: str, first: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
        rec = self.records[name]
        n = rec.frame_bytes
        fd = os.open(self.path / sub / f"{name}.npy", os.O_RDONLY)
        try:
            data = os.pread(fd, count * n, self._offsets[name][sub] + first * n)
        finally:
            os.close(fd)
        if len(data) != count * n:
            raise StoreError(f"{self.path / sub / name}.npy: short read; the store changed, prepare again")
        return np.frombuffer(data, dtype=np.uint8).reshape(shape)  # read-only view of fresh bytes

    def read_frames(self, name: str, indices) -> np.ndarray:
        """Frames ``indices`` of a clip: ``(len(indices), H, W) uint8``, one read of the span they cover."""
        rec = self.records[name]
        idx = np.asarray(indices, dtype=np.int64)
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= rec.num_frames:
            raise IndexError(f"{name}: frames {lo}..{hi} outside 0..{rec.num_frames - 1}")
        span = self._pread("frames", name, lo, hi - lo + 1, (hi - lo + 1, rec.height, rec.width))
        return span[idx - lo]  # (k, H, W)

    def traced_mask(self, name: str, frame: int) -> np.ndarray:
        """The mask of a traced frame: ``(H, W) uint8``."""
        rec = self.records[name]
        j = rec.traced.index(frame)
        return self._pread("traced", name, j, 1, (rec.height, rec.width))

    def true_mask(self, name: str, frame: int) -> np.ndarray:
        """The true mask of any frame of a clip whose source has per-frame truth: ``(H, W) uint8``."""
        rec = self.records[name]
        if not rec.has_true:
            raise KeyError(f"{name} has no per-frame truth")
        if not 0 <= frame < rec.num_frames:
            raise IndexError(f"{name}: frame {frame} outside 0..{rec.num_frames - 1}")
        return self._pread("true", name, frame, 1, (rec.height, rec.width))

    def clip(self, name: str) -> Clip:
        """The whole clip, for evaluation (one clip in memory at a time)."""
        rec = self.records[name]
        shape = (rec.num_frames, rec.height, rec.width)
        frames = self._pread("frames", name, 0, rec.num_frames, shape).copy()
        traced = self._pread("traced", name, 0, len(rec.traced), (len(rec.traced), rec.height, rec.width))
        true = self._pread("true", name, 0, rec.num_frames, shape).copy() if rec.has_true else None
        return Clip(
            name=name,
            frames=frames,
            fps=rec.fps,
            ef=rec.ef,
            split=rec.split,
            traced={f: traced[j].copy() for j, f in enumerate(rec.traced)},
            ed=rec.ed,
            es=rec.es,
            true_masks=true,
            spacing=rec.spacing,
        )
