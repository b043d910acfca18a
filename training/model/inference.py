"""Offline reference inference: a whole clip in, per-frame LV probabilities out.

This is the definition of what the product computes for a clip; evaluation, export parity
checks and the service's tests compare against it. Every frame is the target of its own window
(edge frames replicated), frames are resized to the model's input size and normalised, and the
probability maps are resized back to the clip's size (bilinear) before thresholding.
"""

from __future__ import annotations

import numpy as np
import torch

from echoseg.preprocess import clip_windows, normalize, resize_frames, resize_probabilities
from training.model.network import EchoSegNet


@torch.no_grad()
def predict_clip(model: EchoSegNet, frames: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """``frames (T, H, W) uint8 -> probabilities (T, H, W) float32`` in [0, 1].

    Runs in eval mode (the model's mode is restored afterwards) on the model's device.
    Masks are ``probabilities > model.config.threshold``.
    """
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be a (T, H, W) uint8 array, got {frames.dtype} {frames.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    config = model.config
    height, width = frames.shape[1:]
    # (T, H, W) uint8 -> (T, k, S, S) float32
    windows = clip_windows(normalize(resize_frames(frames, config.input_size), config), config)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        probs = [
            torch.sigmoid(model(torch.from_numpy(windows[i : i + batch_size]).to(device)))[:, 0].cpu().numpy()
            for i in range(0, len(windows), batch_size)
        ]
    finally:
        model.train(was_training)
    # (T, S, S) -> (T, H, W)
    return resize_probabilities(np.concatenate(probs).astype(np.float32), height, width)
