"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest
import torch

from training.model import build_model, get_preset


@pytest.fixture
def tiny_config():
    return get_preset("tiny")


@pytest.fixture
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return build_model(tiny_config).eval()
