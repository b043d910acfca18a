"""Where an exported model comes from: a checkpoint, or an untrained preset with a fixed seed.

An untrained preset export records ``run_id = "untrained:<preset>:seed=<n>"``, so the parity
check can rebuild exactly the same torch network from the ``.onnx`` file alone.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from echoseg.presets import get_preset
from training.model import build_model

logger = logging.getLogger(__name__)

_UNTRAINED = re.compile(r"^untrained:(?P<preset>[A-Za-z0-9_-]+):seed=(?P<seed>\d+)$")


def untrained_run_id(preset: str, seed: int) -> str:
    return f"untrained:{preset}:seed={seed}"


def build_untrained(preset: str, seed: int = 0):
    """A freshly initialised network of ``preset``, the same for the same seed; in eval mode."""
    import torch

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_model(get_preset(preset)).eval()
    finally:
        torch.random.set_rng_state(state)
    return model


def load_source(
    checkpoint: str | Path | None = None, preset: str | None = None, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """``(student network in eval mode, meta)`` from a checkpoint/run directory or a preset name."""
    if (checkpoint is None) == (preset is None):
        raise ValueError("give exactly one of a checkpoint (a run or checkpoint directory) or a preset name")
    if checkpoint is not None:
        from training.model.io import load_pretrained

        model, _, meta = load_pretrained(checkpoint, which="student")
        return model.eval(), meta
    return build_untrained(preset, seed), {"run_id": untrained_run_id(preset, seed), "preset": preset}


def reference_model(props: dict[str, str], checkpoint: str | Path | None = None):
    """The torch network an export should match: ``checkpoint`` if given, else its untrained preset."""
    if checkpoint is not None:
        return load_source(checkpoint=checkpoint)[0]
    match = _UNTRAINED.match(props.get("echoseg.run_id", ""))
    if match is None:
        raise ValueError(
            f"the file was exported from training run {props.get('echoseg.run_id')!r}: "
            "give its checkpoint (--checkpoint RUN) to compare against"
        )
    return build_untrained(match["preset"], int(match["seed"]))
