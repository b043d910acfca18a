"""Preprocessing shared by training, export checks and the service.

Frames are uint8 grayscale. The network sees them resized to ``input_size`` (bilinear), scaled
to [0, 1] and normalised with the preset's mean/std; its masks are brought back to the clip's
size by resizing the probability map (bilinear) and thresholding it there.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from training.model.config import ModelConfig


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """``(T, H, W) uint8 -> (T, size, size) uint8`` (bilinear). Returns the input if already sized."""
    if frames.ndim != 3:
        raise ValueError(f"frames must be (T, H, W), got shape {frames.shape}")
    if frames.shape[1:] == (size, size):
        return frames
    out = np.empty((frames.shape[0], size, size), dtype=np.uint8)
    for i, f in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR))
    return out


def normalize(frames: np.ndarray, config: ModelConfig) -> np.ndarray:
    """uint8 frames of any shape -> float32 ``(x / 255 - mean) / std``."""
    x = frames.astype(np.float32) * (1.0 / 255.0)
    return (x - np.float32(config.mean)) * np.float32(1.0 / config.std)


def resize_probabilities(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(T, S, S) float -> (T, height, width) float32`` (bilinear); input already sized is returned."""
    if prob.ndim != 3:
        raise ValueError(f"probabilities must be (T, S, S), got shape {prob.shape}")
    prob = prob.astype(np.float32, copy=False)
    if prob.shape[1:] == (height, width):
        return prob
    out = np.empty((prob.shape[0], height, width), dtype=np.float32)
    for i, p in enumerate(prob):
        out[i] = np.asarray(Image.fromarray(p, mode="F").resize((width, height), Image.BILINEAR))
    return out


def probabilities_to_masks(prob: np.ndarray, height: int, width: int, threshold: float) -> np.ndarray:
    """``(T, S, S) float probabilities -> (T, height, width) uint8 {0, 1}`` masks at the clip's size."""
    return (resize_probabilities(prob, height, width) > threshold).astype(np.uint8)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
