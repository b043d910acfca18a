"""Turn a checkpoint into an ONNX file once (and, for INT8 serving, quantize it once); reuse them.

The ONNX file is written under ``$ECHOSEG_CACHE_DIR`` (default ``$XDG_CACHE_HOME/echoseg`` or
``~/.cache/echoseg``) in a folder named by a hash of the weights, the config and the export
options, so a changed checkpoint is exported again and an unchanged one starts fast. An INT8
file (``ECHOSEG_INT8``) is quantized from the fp32 one (``export.quantize``) into a folder named
by the fp32 file's digest.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from echoseg.artifacts import CONFIG_NAME, METADATA_PREFIX, checkpoint_weights, read_onnx_metadata
from echoseg.forms import SUMMARY_FORM
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
    options = f"calibration={settings.export_calibration};batch={export_batch(settings)}"
    h.update(f"{options};summaries={SUMMARY_FORM}".encode())
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


def int8_for(onnx_path: Path, settings: Settings) -> Path:
    """The cached INT8 quantization of the fp32 export ``onnx_path`` (quantizing it first when
    missing); an INT8 file is its own answer."""

    precision = read_onnx_metadata(onnx_path).get(METADATA_PREFIX + "precision")
    if precision == "int8":
        return onnx_path
    if precision != "fp32":
        raise ValueError(f"{onnx_path.name} is {precision}; INT8 serving needs an fp32 or int8 .onnx file")
    key = hashlib.sha256(onnx_path.read_bytes() + b";int8").hexdigest()[:16]
    out = cache_root(settings) / key / "model-int8.onnx"
    if out.exists():
        log.info("using cached INT8 model %s", out)
        return out
    from export.quantize import quantize_int8

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"model-int8.{os.getpid()}.tmp.onnx")
    log.info("quantizing %s to INT8 into %s", onnx_path.name, out)
    quantize_int8(onnx_path, tmp)
    tmp.replace(out)
    return out


def servable_onnx(path: Path, kind: str, settings: Settings) -> Path:
    """The ``.onnx`` file ONNX Runtime serves for model ``path`` of ``kind`` under ``settings``."""
    onnx_path = path if kind == "onnx" else onnx_for(path, settings)
    return int8_for(onnx_path, settings) if settings.int8 else onnx_path
