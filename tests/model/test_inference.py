"""predict_clip: the offline reference inference over a whole clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoseg.preprocess import normalize
from training.model.inference import predict_clip


def test_shape_range_and_mode(tiny_model):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(7, 48, 40), dtype=np.uint8)
    tiny_model.train()
    probs = predict_clip(tiny_model, frames, batch_size=3)
    assert tiny_model.training  # the caller's mode is restored
    assert probs.shape == (7, 48, 40) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(predict_clip(tiny_model, frames, batch_size=16), probs, atol=1e-6)


def test_windows_replicate_edges_and_match_the_model(tiny_model):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(4, 32, 32), dtype=np.uint8)  # already at input size: no resize
    probs = predict_clip(tiny_model, frames)
    x = torch.from_numpy(normalize(frames, tiny_model.config))
    windows = torch.stack([x[[0, 0, 1]], x[[2, 3, 3]]])  # first and last target frames (centred, k=3)
    with torch.no_grad():
        expected = torch.sigmoid(tiny_model(windows))[:, 0].numpy()
    np.testing.assert_allclose(probs[[0, 3]], expected, atol=1e-6)


def test_rejects_non_uint8_clips(tiny_model):
    with pytest.raises(ValueError, match="uint8"):
        predict_clip(tiny_model, np.zeros((3, 32, 32), dtype=np.float32))
