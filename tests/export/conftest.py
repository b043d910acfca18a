"""Shared exports for the export tests: each graph is exported once per session (exports take seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.onnx import export_onnx
from export.source import build_untrained

CONV_BATCH = 2


@pytest.fixture(scope="session")
def untrained():
    """Seeded untrained networks by preset name (the same network every time)."""
    cache = {}

    def get(preset: str):
        if preset not in cache:
            cache[preset] = build_untrained(preset, seed=0)
        return cache[preset]

    return get


@pytest.fixture(scope="session")
def exported(untrained, tmp_path_factory):
    """``(preset, form) -> .onnx path``: matmul with a dynamic batch, conv with batch 2."""
    folder = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(preset: str, form: str):
        if (preset, form) not in cache:
            batch = "dynamic" if form == "matmul" else CONV_BATCH
            meta = {"run_id": f"untrained:{preset}:seed=0"}
            path = folder / f"{preset}-{form}.onnx"
            model = untrained(preset)
            cache[(preset, form)] = export_onnx(model, path, calibration=form, batch=batch, meta=meta)
        return cache[(preset, form)]

    return get


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Two short synthetic clips in the EchoNet-Dynamic layout, with true masks."""
    from training.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic"), videos=2, frames=16, size=64, seed=0)


def clip_arrays(root, config):
    """``(windows (N, k, S, S) float32, masks (N, 1, S, S) float32)`` for every frame of every clip."""
    from training.data.echonet import load_clips
    from training.model.preprocessing import normalize, resize_frames
    from training.model.window import clip_windows

    windows, masks = [], []
    for clip in load_clips(root):
        size = config.input_size
        windows.append(clip_windows(normalize(resize_frames(clip.frames, size), config), config))
        resized = resize_frames(clip.true_masks * 255, size) > 127  # (T, H, W) -> (T, S, S)
        masks.append(resized[:, None].astype(np.float32))
    return np.concatenate(windows), np.concatenate(masks)


@pytest.fixture(scope="session")
def conv_batch() -> int:
    return CONV_BATCH


@pytest.fixture(scope="session")
def tiny_clips(synthetic_root):
    """The synthetic clips as the tiny preset sees them: ``(windows, masks)``."""
    return clip_arrays(synthetic_root, build_untrained("tiny").config)


@pytest.fixture(scope="session")
def trained_tiny(tiny_clips):
    """The tiny network fitted for a few steps to the synthetic clips' true masks.

    An untrained network's logits sit in a band a few hundredths wide, so any rounding flips
    pixels across the threshold; a fitted one has the separated logits of a real model, which
    is what an fp16 mask comparison is about.
    """
    model = build_untrained("tiny", seed=0)
    windows, masks = tiny_clips
    x, y = torch.from_numpy(windows), torch.from_numpy(masks)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        idx = torch.randint(0, len(x), (8,), generator=generator)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
