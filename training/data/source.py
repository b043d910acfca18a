"""The clips of one split of a dataset, read one at a time (what evaluation iterates).

``ClipSource(root, split)`` accepts any folder :func:`~training.data.sources.open_source` knows
(EchoNet-Dynamic, CAMUS) or a frame store (``training.data.store``; refreshed first when its
source folder is reachable). Only the clip being read is in memory, so a split of any length is
evaluated in bounded memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from training.data.base import normalise_split
from training.data.clip import Clip
from training.data.sources import open_source
from training.data.store import ensure_store, is_store

logger = logging.getLogger(__name__)


class ClipSource:
    """Names of a split's clips, and ``load(name) -> Clip``; iterating yields the clips in order."""

    def __init__(self, root, split: str | None = None):
        root = Path(root)
        self.root, self.split = root, normalise_split(split)
        if is_store(root):
            store = ensure_store(root, progress=False)
            self.names, self.load = store.names(split), store.clip
        else:
            source = open_source(root)
            source.require_usable()
            self.names, self.load = source.names(split), source.load

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Clip]:
        for name in self.names:
            yield self.load(name)
