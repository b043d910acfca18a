"""What every data source is: a folder that lists its clips, loads one, and reports its problems.

A source (:class:`DataSource`) is one layout of labelled echo clips on disk: EchoNet-Dynamic
(:class:`~training.data.echonet.EchoNetSource`) or CAMUS (:class:`~training.data.camus.CamusSource`).
:func:`training.data.sources.open_source` detects the layout of a folder once, from the table
there; the frame store (``training.data.store``), evaluation (``training.data.source``) and
``echoseg data check`` (``training.data.check``) then use the source without asking which kind it
is. Problems are :class:`Problem` records naming the file and, where it applies, the CSV line.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from training.data.clip import Clip

logger = logging.getLogger(__name__)

SPLITS = ("TRAIN", "VAL", "TEST")
MIN_AGREEMENT_DICE = 0.9  # below this a tracing and the true mask disagree


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


def raise_problems(problems: list[Problem]) -> None:
    """Refuse data with problems: ``FileNotFoundError`` if anything is missing, else :class:`DatasetError`."""
    if any(p.kind == "missing" for p in problems):
        raise FileNotFoundError("; ".join(str(p) for p in problems))
    if problems:
        raise DatasetError(problems)


def normalise_split(split: str | None) -> str | None:
    """``None``/``'all'`` -> ``None``; otherwise the upper-case split name, checked."""
    if split is None or split.strip().upper() == "ALL":
        return None
    s = split.strip().upper()
    if s not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or 'ALL' (any case), got {split!r}")
    return s


@dataclass
class PlannedClip:
    """A clip as its source describes it before decoding: its files and a digest of its labels."""

    name: str
    files: list[Path]
    meta_digest: str = ""  # the clip's CSV rows (EchoNet); empty when the files say everything
    expected_frames: int | None = None  # the frame count the source declares, when it does


# -- checking: what ``echoseg data check`` reports ----------------------------------------------
def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def compare_true(record: dict, masks: dict[int, np.ndarray], true: np.ndarray) -> dict:
    """ED/ES and areas from the true masks at the traced frames, and the Dice of each traced mask."""
    true_areas = {f: int(true[f].sum()) for f in masks}
    ed = max(true_areas, key=true_areas.get)
    es = min(true_areas, key=true_areas.get)
    dices = {f: dice(m, true[f]) for f, m in masks.items()}
    return {
        "ed": ed,
        "es": es,
        "ed_area": true_areas[ed],
        "es_area": true_areas[es],
        "dice": {str(f): round(d, 4) for f, d in dices.items()},
        "agrees": ed == record["ed"] and es == record["es"] and min(dices.values()) >= MIN_AGREEMENT_DICE,
    }


def check_report(root, layout: str, counts: Counter, videos, problems, warnings) -> dict:
    """The JSON-ready report of ``echoseg data check`` (``ok`` False on any problem)."""
    return {
        "root": str(root),
        "layout": layout,
        "counts": {s: counts.get(s, 0) for s in sorted(counts)},
        "videos": videos,
        "problems": [p.to_dict() for p in problems],
        "warnings": [p.to_dict() for p in warnings],
        "ok": not problems,
    }


class DataSource(ABC):
    """One dataset folder of a known layout; a row of :data:`training.data.sources.SOURCES`.

    ``problems()`` are what makes the folder unusable as a whole (a missing CSV, a wrong header);
    ``warnings()`` what is only ignored. :meth:`load` raises on a clip it cannot read, naming the
    file. :meth:`plan` lists each clip's files for the frame store; :meth:`check` validates every
    clip for ``echoseg data check``.
    """

    kind: ClassVar[str]
    description: ClassVar[str]  # the layout, for "neither ... nor ..." messages

    def __init__(self, root) -> None:
        self.root = Path(root)

    @classmethod
    @abstractmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` has this layout (cheap: looks at names, reads no clip)."""

    @abstractmethod
    def names(self, split: str | None = None) -> list[str]:
        """The clips of ``split`` (TRAIN/VAL/TEST in any case; ``None``/``'all'`` for all)."""

    @abstractmethod
    def load(self, name: str) -> Clip:
        """One clip, decoded; raises (naming the file) when it cannot be used."""

    @abstractmethod
    def plan(self) -> list[PlannedClip]:
        """Every clip's source files, for the frame store to tell what changed."""

    @abstractmethod
    def check(self) -> dict:
        """Every clip validated: the report of :func:`check_report`."""

    def problems(self) -> list[Problem]:
        return []

    def warnings(self) -> list[Problem]:
        return []

    def require_usable(self) -> None:
        """Raise on :meth:`problems`; log :meth:`warnings` as ignored."""
        raise_problems(self.problems())
        for p in self.warnings():
            logger.warning("%s (ignored)", p)
