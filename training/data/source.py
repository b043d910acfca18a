"""The clips of one split of a dataset, read one at a time (what evaluation iterates).

``ClipSource(root, split)`` accepts an EchoNet-Dynamic folder, a CAMUS folder or a frame store
(``training.data.store``; refreshed first when its source folder is reachable). Only the clip being
read is in memory, so a split of any length is evaluated in bounded memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from training.data.clip import Clip

logger = logging.getLogger(__name__)


class ClipSource:
    """Names of a split's clips, and ``load(name) -> Clip``; iterating yields the clips in order."""

    def __init__(self, root, split: str | None = None):
        from training.data.echonet import normalise_split
        from training.data.store import ensure_store, is_store, source_kind

        root = Path(root)
        self.root, self.split = root, normalise_split(split)
        if is_store(root):
            store = ensure_store(root, progress=False)
            self.names, self.load = store.names(split), store.clip
        elif source_kind(root) == "echonet":
            self.names, self.load = _echonet(root, split)
        else:
            self.names, self.load = _camus(root, self.split)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Clip]:
        for name in self.names:
            yield self.load(name)


def _echonet(root: Path, split: str | None) -> tuple[list[str], Callable[[str], Clip]]:
    from training.data.echonet import _raise, load_clip, read_index

    index = read_index(root)
    _raise(index.problems)
    for p in index.unknown_tracings():
        logger.warning("%s (ignored)", p)
    return index.names(split), partial(load_clip, index)


def _camus(root: Path, split: str | None) -> tuple[list[str], Callable[[str], Clip]]:
    from training.data.camus import VIEWS, find_patients, split_of

    folders = {f.name: f for f in find_patients(root) if split is None or split_of(f.name) == split}
    names = [f"{patient}_{view}" for patient in folders for view in VIEWS]
    return names, partial(_camus_clip, folders)


def _camus_clip(folders: dict[str, Path], name: str) -> Clip:
    from training.data.camus import camus_clip
    from training.data.echonet import DatasetError

    patient, view = name.rsplit("_", 1)
    clip, problems = camus_clip(folders[patient], view)
    if clip is None:
        raise DatasetError(problems)
    return clip
