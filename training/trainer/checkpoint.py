"""Checkpoint directories of a training run (layout in docs/architecture.md).

``best/`` and ``last/`` each hold ``student.safetensors``, ``teacher.safetensors`` (mean-teacher
runs) and ``config.json`` (the model configuration and preprocessing, written by
``training.model.io.save_pretrained``), so loading never needs the training YAML. ``last/`` also
holds ``state.pt``: optimiser, scheduler, gradient scaler, step, data-stream positions and the RNG
states of every process, which is what ``--resume`` needs to continue a run exactly.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def save_checkpoint(
    directory: str | Path,
    student: nn.Module,
    teacher: nn.Module | None,
    meta: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory; the previous one is replaced only once the new one is complete."""
    from training.model.io import save_pretrained

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_pretrained(student, tmp, name="student", meta=meta)
    if teacher is not None:
        save_pretrained(teacher, tmp, name="teacher", meta=meta)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def load_weights(directory: str | Path, module: nn.Module, which: str = "student") -> dict[str, Any]:
    """Load ``<which>.safetensors`` of a checkpoint directory into an existing module; returns meta."""
    from training.model.io import load_pretrained

    loaded, _, meta = load_pretrained(Path(directory), which=which, map_location="cpu")
    module.load_state_dict(loaded.state_dict())
    return meta


def load_state(directory: str | Path, device: torch.device) -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise ValueError(f"{path} not found: --resume needs a run directory whose last/ has {STATE_FILE}")
    return torch.load(path, map_location=device, weights_only=False)


def rng_state() -> dict[str, Any]:
    """The random states this process draws from (Python, NumPy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
