"""Turn a checkpoint into an ONNX file once, and reuse it on later starts.

The ONNX file is written under ``$ECHOSEG_CACHE_DIR`` (default ``$XDG_CACHE_HOME/echoseg`` or
``~/.cache/echoseg``) in a folder named by a hash of the weights, the config and the export
options, so a changed checkpoint is exported again and an unchanged one starts fast.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from echoseg.artifacts import CONFIG_NAME, checkpoint_weights
from service.core.config import Settings

log = logging.getLogger(__name__)


def cache_root(settings: Settings) -> Path:
    if settings.cache_dir:
        return Path(settings.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "echoseg"


def checkpoint_files(path: Path) -> list[Path]:
    """The files whose bytes define a checkpoint (its config and student weights), in a stable order."""
    weights = checkpoint_weights(path)
    return [weights.parent / CONFIG_NAME, weights]


def export_batch(settings: Settings) -> str | int:
    """``matmul`` exports with a dynamic batch; ``conv`` needs a static one (1: no padding waste)."""
    return "dynamic" if settings.export_calibration == "matmul" else 1


def cache_key(path: Path, settings: Settings) -> str:
    h = hashlib.sha256()
    for f in checkpoint_files(path):
        if f.exists():
            h.update(f.read_bytes())
    h.update(f"calibration={settings.export_calibration};batch={export_batch(settings)}".encode())
    return h.hexdigest()[:16]


def onnx_for(path: Path, settings: Settings) -> Path:
    """The cached ONNX export of checkpoint ``path`` (exporting it first when missing)."""
    out = cache_root(settings) / cache_key(path, settings) / "model.onnx"
    if out.exists():
        log.info("using cached ONNX export %s", out)
        return out
    from export.onnx import export_onnx
    from export.source import load_source

    model, meta = load_source(checkpoint=path)
    config = model.config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"model.{os.getpid()}.tmp.onnx")
    log.info(
        "exporting %s checkpoint to ONNX (%s form) into %s", config.preset, settings.export_calibration, out
    )
    export_onnx(
        model.eval(), tmp, calibration=settings.export_calibration, batch=export_batch(settings), meta=meta
    )
    tmp.replace(out)
    return out
