"""Suite-wide fixtures and marker handling.

Exports and a fitted tiny network are session fixtures here, shared by the export and runtime
tests. `gpu` tests skip without CUDA and `tensorrt` tests without TensorRT (and a GPU), so the suite
runs everywhere and says why something did not run. Torch is limited to one intra-op thread
unless a test asks for more, which keeps the suite predictable on 2-core CI machines.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    has_cuda = _cuda_available()
    has_trt = has_cuda and importlib.util.find_spec("tensorrt") is not None
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none found)")
    skip_trt = pytest.mark.skip(reason="needs TensorRT and a CUDA GPU (not found)")
    for item in items:
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(skip_gpu)
        if item.get_closest_marker("tensorrt") and not has_trt:
            item.add_marker(skip_trt)


@pytest.fixture(autouse=True, scope="session")
def _limit_torch_threads():
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- exports shared by the export and runtime tests (each graph exported once per session) --------
CONV_BATCH = 2


@pytest.fixture(scope="session")
def untrained():
    """Seeded untrained networks by preset name (the same network every time)."""
    from export.source import build_untrained

    cache = {}

    def get(preset: str):
        if preset not in cache:
            cache[preset] = build_untrained(preset, seed=0)
        return cache[preset]

    return get


@pytest.fixture(scope="session")
def exported(untrained, tmp_path_factory):
    """``(preset, form) -> .onnx path``: matmul with a dynamic batch, conv with batch 2."""
    from export.onnx import export_onnx

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
    from echoseg.preprocess import clip_windows, normalize, resize_frames
    from training.data.echonet import load_clips

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
    from echoseg.presets import get_preset

    return clip_arrays(synthetic_root, get_preset("tiny"))


@pytest.fixture(scope="session")
def trained_tiny(tiny_clips):
    """The tiny network fitted for a few steps to the synthetic clips' true masks.

    An untrained network's logits sit in a band a few hundredths wide, so any rounding flips
    pixels across the threshold; a fitted one has the separated logits of a real model, which
    is what an fp16 mask comparison is about.
    """
    import torch

    from export.source import build_untrained

    model = build_untrained("tiny", seed=0)
    windows, masks = tiny_clips
    x, y = torch.from_numpy(windows), torch.from_numpy(masks)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        idx = torch.randint(0, len(x), (8,), generator=generator)
        logits, target = model(x[idx]), y[idx]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        # a soft Dice term, as in training: with BCE alone the ResNet-family tiny still predicts
        # background everywhere after 30 steps (positive fraction 0; with Dice 0.12 for 0.12 true)
        probs = torch.sigmoid(logits)
        loss = loss + 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
