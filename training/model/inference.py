"""Offline reference inference: a whole clip in, per-frame LV probabilities out.

This is the definition of what the product computes for a clip; evaluation, export parity
checks and the service's tests compare against it. Every frame is the target of its own window
(edge frames replicated), frames are cropped to the clip's ultrasound region (``echoseg.region``:
detected from its first frames unless given; a clip whose image fills the frame is used whole),
resized to the model's input size and normalised, and the probability maps are brought back to
the clip's pixels (bilinear) before thresholding, exactly as the service does.
"""

from __future__ import annotations

import numpy as np
import torch

from echoseg.preprocess import clip_windows, preprocess
from echoseg.region import DETECT_FRAMES, Region, choose_region, map_back
from training.model.network import EchoSegNet


@torch.no_grad()
def predict_clip(
    model: EchoSegNet, frames: np.ndarray, batch_size: int = 16, region: Region | None = None
) -> np.ndarray:
    """``frames (T, H, W) uint8 -> probabilities (T, H, W) float32`` in [0, 1].

    ``region``: the clip's ultrasound region; None detects it from the first frames, as the
    service does for a clip without a DICOM region. Runs in eval mode (the model's mode is
    restored afterwards) on the model's device. Masks are ``probabilities > model.config.threshold``.
    """
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be a (T, H, W) uint8 array, got {frames.dtype} {frames.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    config = model.config
    if region is None:
        region = choose_region(frames[:DETECT_FRAMES])[0]
    # (T, H, W) uint8 -> (T, k, S, S) float32
    windows = clip_windows(preprocess(frames, config, region), config)
    probs = torch.sigmoid(torch.from_numpy(window_logits(model, windows, batch_size))).numpy()
    # (T, S, S) -> (T, H, W)
    return map_back(probs.astype(np.float32), region)


@torch.no_grad()
def window_logits(model: EchoSegNet, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """``windows (T, k, S, S) float32 -> logits (T, S, S) float32`` of their target frames, in
    batches of ``batch_size``, in eval mode (the model's mode is restored) on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        logits = [
            model(torch.from_numpy(windows[i : i + batch_size]).to(device))[:, 0].float().cpu().numpy()
            for i in range(0, len(windows), batch_size)
        ]
    finally:
        model.train(was_training)
    return np.concatenate(logits)
