"""Measured size and cost of a network: parameters and FLOPs per output frame.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of one
window (batch 1), which yields one output frame. A multiply-add counts as 2 FLOPs; only the
operations the counter knows (convolutions, matrix products) are counted, not pooling,
normalisation or activations. For a preset the network is built on the ``meta`` device, so the
count allocates no memory and takes no time even for the ``paper`` preset.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from echoseg.config import ModelConfig
from echoseg.presets import get_preset
from training.model.network import EchoSegNet


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: EchoSegNet) -> int:
    """FLOPs of one forward pass at batch 1 (one output frame)."""
    c = model.config
    device = next(model.parameters()).device
    frames = torch.zeros(1, c.num_frames * c.in_channels, c.input_size, c.input_size, device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(frames)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_summary(
    preset: str | None = None,
    checkpoint: str | None = None,
    calibration: str | None = None,
    latency: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Parameters, FLOPs per frame and configuration of a preset or a checkpoint.

    With ``latency`` (``{"threads": n, "runs": r}``) the network is also timed at batch 1; that
    needs real weights, so a preset is then built on the CPU instead of the meta device.
    """
    if (preset is None) == (checkpoint is None):
        raise ValueError("give exactly one of preset or checkpoint")
    meta: dict[str, Any] = {}
    if checkpoint is not None:
        from training.model.io import load_pretrained

        model, config, meta = load_pretrained(checkpoint)
    else:
        config: ModelConfig = get_preset(preset)
        with torch.device("cpu" if latency else "meta"):
            model = EchoSegNet(config)
    if calibration is not None:
        model.set_calibration(calibration)
    info = {
        "preset": model.config.preset,
        "parameters": count_parameters(model),
        "flops_per_frame": count_flops(model),
        "calibration": model.config.calibration,
        "config": model.config.to_dict(),
        "meta": meta,
    }
    if latency:
        from training.model.latency import measure_latency

        info["latency"] = measure_latency(model, **latency)
    return info
