"""The data sources, named once: layout -> class. A new layout is one module and one row.

:func:`open_source` detects a folder's layout here and nowhere else; the frame store, evaluation
and ``echoseg data check`` take the :class:`~training.data.base.DataSource` it returns.
"""

from __future__ import annotations

from pathlib import Path

from training.data.base import DataSource
from training.data.camus import CamusSource
from training.data.echonet import EchoNetSource
from training.data.folder import ClipFolderSource

# In detection order: the first whose ``detect`` accepts a folder opens it; a plain folder of clips
# (no tables: a site's unlabelled echoes) is what is left.
SOURCES: dict[str, type[DataSource]] = {
    cls.kind: cls for cls in (EchoNetSource, CamusSource, ClipFolderSource)
}


def detect_kind(root) -> str | None:
    """The layout of ``root`` (a key of :data:`SOURCES`), or None when it has none of them."""
    root = Path(root)
    return next((kind for kind, cls in SOURCES.items() if cls.detect(root)), None)


def open_source(root) -> DataSource:
    """The dataset folder ``root`` as a source of its layout; ``FileNotFoundError`` if it has none."""
    root = Path(root)
    kind = detect_kind(root)
    if kind is None:
        layouts = " nor ".join(cls.description for cls in SOURCES.values())
        raise FileNotFoundError(f"{root} is neither {layouts}")
    return SOURCES[kind](root)
