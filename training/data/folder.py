"""A plain folder of clips (AVI/MP4/DICOM files, no tables, no labels): a site's own echoes.

``echoseg adapt`` learns from a site's unlabelled clips, which come as files, not as a dataset:
no ``FileList.csv``, no tracings. :class:`ClipFolderSource` is that layout, a row of
:data:`training.data.sources.SOURCES` checked after the labelled layouts, so the frame store
(``training.data.store``) decodes such a folder once like any other and training reads windows
from it.

Clips are decoded by the service's own decoders (``service.codecs.clip``: the same limits, colour
to luma, bit depths, truncation handling), so adaptation sees the frames serving will see; the
ultrasound region is then found per clip exactly as for every training window
(``echoseg.region``). A clip's name is a digest of its path inside the folder, never the file
name, so nothing downstream (store records aside, which also hold the files' paths for
refreshing) carries a patient's file name; decode errors name the clip by that digest only.

Splits: the folder's clips ranked by their name, the first :data:`HOLDOUT_SHARE` of them (at
least one when there are two or more) are ``VAL``, the held-out slice ``echoseg adapt`` checks
itself on; the others are ``TRAIN``. The ranking depends on paths only, so adding clips moves few.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np

from service.codecs.clip import Limits, decode_clip, sniff_media_type
from service.core.errors import ServiceError
from training.data import base
from training.data.base import DatasetError, DataSource, PlannedClip, Problem
from training.data.clip import Clip

SUFFIXES = (".avi", ".mp4", ".dcm", ".dicom")
HOLDOUT_SHARE = 0.2
MAX_CLIP_BYTES = 512 * 2**20  # a file larger than this is not read
LIMITS = Limits(
    max_frames=2000, max_width=4096, max_height=4096, max_decoded_bytes=2**31, max_inflated_bytes=2**30
)
DEFAULT_FPS = 30.0  # when the file does not say


def clip_files(root: Path) -> list[Path]:
    """The clip files under ``root`` (any depth), by their suffix, in path order."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def clip_name(root: Path, path: Path) -> str:
    """A clip's name: a digest of its path relative to the folder (no file name survives)."""
    rel = path.relative_to(root).as_posix()
    return "clip-" + hashlib.blake2b(rel.encode(), digest_size=8).hexdigest()


class ClipFolderSource(DataSource):
    """A folder of clip files without tables: every clip unlabelled, split by name rank."""

    kind = "clips"
    description = "a folder of AVI/MP4/DICOM clips"

    def __init__(self, root) -> None:
        super().__init__(root)
        self.files = {clip_name(self.root, p): p for p in clip_files(self.root)}
        ranked = sorted(self.files)
        held = max(math.ceil(HOLDOUT_SHARE * len(ranked)), 1) if len(ranked) >= 2 else 0
        self.splits = {name: "VAL" if i < held else "TRAIN" for i, name in enumerate(ranked)}

    @classmethod
    def detect(cls, root: Path) -> bool:
        root = Path(root)
        if not root.is_dir() or (root / "FileList.csv").exists():
            return False
        return any(p.is_file() and p.suffix.lower() in SUFFIXES for p in root.rglob("*"))

    def names(self, split: str | None = None) -> list[str]:
        s = base.normalise_split(split)
        return [n for n in sorted(self.files) if s is None or self.splits[n] == s]

    def load(self, name: str) -> Clip:
        path = self.files.get(name)
        if path is None:
            raise DatasetError([Problem(name, "no such clip in the folder", kind="missing")])
        size = path.stat().st_size
        if size > MAX_CLIP_BYTES:
            raise DatasetError([Problem(name, f"{size} bytes is over {MAX_CLIP_BYTES}", kind="range")])
        data = path.read_bytes()
        media = sniff_media_type(data)
        if media is None or media == "application/x-npy":
            raise DatasetError([Problem(name, "not an AVI, MP4 or DICOM clip", kind="corrupt")])
        try:
            decoded = decode_clip(data, media, LIMITS)
        except ServiceError as exc:  # its message never holds the file name
            raise DatasetError([Problem(name, str(exc), kind="corrupt")]) from None
        frames = np.ascontiguousarray(decoded.frames)
        return Clip(
            name=name,
            frames=frames,
            fps=float(decoded.fps or DEFAULT_FPS),
            ef=float("nan"),
            split=self.splits[name],
            spacing=tuple(decoded.spacing) if decoded.spacing else (1.0, 1.0),
        )

    def plan(self) -> list[PlannedClip]:
        return [PlannedClip(name, [path]) for name, path in sorted(self.files.items())]

    def check(self) -> dict:
        problems: list[Problem] = []
        videos = []
        for name in self.names():
            try:
                clip = self.load(name)
            except DatasetError as exc:
                problems += exc.problems
                videos.append({"name": name, "split": self.splits[name], "status": "invalid"})
                continue
            t, h, w = clip.frames.shape
            videos.append(
                {"name": name, "split": clip.split, "frames": t, "height": h, "width": w, "status": "ok"}
            )
        counts = Counter(v["split"] for v in videos)
        return base.check_report(self.root, self.kind, counts, videos, problems, [])
