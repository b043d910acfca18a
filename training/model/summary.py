"""Measured size and cost of a network: parameters, FLOPs and multiply-adds per output frame.

Counted on one forward pass of one window (batch 1), which yields one output frame:

- ``flops_per_frame``: ``torch.utils.flop_counter.FlopCounterMode``; a multiply-add counts as 2
  FLOPs; convolutions (also the per-sample calibration convolution) and matrix products are
  counted, not pooling, normalisation or activations. ``macs_per_frame`` is half of it.
- ``conv_module_macs_per_frame``: the rule of ``thop`` (``thop.profile``, the usual tool behind
  papers' "FLOPs (G)" columns, which reports multiply-adds): for every ``nn.Conv2d`` and
  ``nn.ConvTranspose2d`` module, output elements x (input channels / groups x kernel area + 1 if
  biased). Like thop it does not see ``F.conv2d`` or ``torch.matmul`` calls, so ASSC's
  per-sample convolution and its attention are not in it.

For a preset the network is built on the ``meta`` device, so the count allocates no memory and
takes no time even for the ``paper`` preset.
"""

from __future__ import annotations

from collections.abc import Callable
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


# Table 7 of the paper (Wu et al. 2022): its network at 256 x 256.
PAPER_TABLE7 = {"parameters": 74.798e6, "flops": 56.359e9}


def count_conv_module_macs(model: EchoSegNet) -> int:
    """Multiply-adds of the network's convolution modules at batch 1, counted as thop counts them."""
    c = model.config
    total = 0

    def hook(module, inputs, output) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        per_output = module.in_channels // module.groups * kernel + (module.bias is not None)
        total += output.numel() * per_output

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    device = next(model.parameters()).device
    frames = torch.zeros(1, c.num_frames * c.in_channels, c.input_size, c.input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(frames)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(total)


def model_summary(
    preset: str | None = None,
    checkpoint: str | None = None,
    calibration: str | None = None,
    latency: Callable[[EchoSegNet], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Parameters, FLOPs per frame and configuration of a preset or a checkpoint.

    With ``latency`` (a timing of the network, e.g. :func:`export.latency.measure_latency`, which
    ``echoseg model-info --latency`` passes) its result is added under ``latency``; that needs real
    weights, so a preset is then built on the CPU instead of the meta device.
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
    flops = count_flops(model)
    info = {
        "preset": model.config.preset,
        "architecture": model.config.architecture,
        "parameters": count_parameters(model),
        "flops_per_frame": flops,
        "macs_per_frame": flops // 2,
        "conv_module_macs_per_frame": count_conv_module_macs(model),
        "paper_table7": {**PAPER_TABLE7, "note": "the paper's 'Flops (G)'; read as multiply-adds (thop)"},
        "calibration": model.config.calibration,
        "config": model.config.to_dict(),
        "meta": meta,
    }
    if latency is not None:
        info["latency"] = latency(model)
    return info
