"""The EchoSeg network, its presets and its weights I/O.

``build_model(get_preset("lite"))`` gives an :class:`EchoSegNet`; ``training.model.io`` saves
and loads it with its configuration.
"""

from __future__ import annotations

from training.model.config import ModelConfig
from training.model.network import EchoSegNet
from training.model.registry import PRESETS, get_preset, list_presets


def build_model(config: ModelConfig) -> EchoSegNet:
    """A freshly initialised network for ``config``."""
    if not isinstance(config, ModelConfig):
        raise ValueError(f"build_model needs a ModelConfig, got {type(config).__name__}")
    return EchoSegNet(config)


__all__ = ["PRESETS", "EchoSegNet", "ModelConfig", "build_model", "get_preset", "list_presets"]
