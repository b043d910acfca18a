"""Weights I/O: a checkpoint directory holds ``<name>.safetensors`` and ``config.json``.

``config.json`` is ``{"model": ModelConfig.to_dict(), "meta": {...}}`` (meta: run id, step,
preset, metrics, ...), so a checkpoint always says which architecture and preprocessing it needs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from echoseg.artifacts import CONFIG_NAME, WEIGHTS_SUFFIX, checkpoint_weights, read_checkpoint_config
from echoseg.config import ModelConfig
from training.model.network import EchoSegNet

logger = logging.getLogger(__name__)


def save_pretrained(
    model: EchoSegNet, directory: str | Path, name: str = "student", meta: dict[str, Any] | None = None
) -> Path:
    """Write ``<directory>/<name>.safetensors`` and ``<directory>/config.json``; return the weights path.

    Several weight files (student, teacher) may share one directory and its config.json; the meta
    of the last save is kept.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    weights = directory / f"{name}{WEIGHTS_SUFFIX}"
    save_file(state, str(weights))
    document = {"model": model.config.to_dict(), "meta": dict(meta or {})}
    (directory / CONFIG_NAME).write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    logger.info("saved %s weights (%d tensors) to %s", name, len(state), weights)
    return weights


def load_pretrained(
    path: str | Path, which: str = "student", map_location: str = "cpu"
) -> tuple[EchoSegNet, ModelConfig, dict[str, Any]]:
    """Load a network with its configuration and meta.

    ``path`` is a checkpoint directory (``config.json`` + ``<which>.safetensors``), a training run
    directory (its ``best/`` is used), or a ``.safetensors`` file with ``config.json`` beside it.
    Returns ``(model in eval mode, config, meta)``.
    """
    weights = checkpoint_weights(path, which)
    config, meta = read_checkpoint_config(weights)
    model = EchoSegNet(config)
    model.load_state_dict(load_file(str(weights), device=str(map_location)))
    model.to(map_location).eval()
    logger.info("loaded %s (preset %s) from %s", weights.stem, config.preset, weights)
    return model, config, meta
