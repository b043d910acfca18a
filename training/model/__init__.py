"""The EchoSeg network and its weights I/O.

``build_model(get_preset("lite"))`` gives an :class:`EchoSegNet`; ``training.model.io`` saves
and loads it with its configuration. Presets and the configuration are the core's
(``echoseg.presets``, ``echoseg.config``). The network (and so torch) is imported on first use,
so importing ``training.model`` (e.g. for the presets) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from echoseg.config import ModelConfig
from echoseg.presets import PRESETS, get_preset, list_presets

if TYPE_CHECKING:
    from training.model.network import EchoSegNet


def build_model(config: ModelConfig) -> EchoSegNet:
    """A freshly initialised network for ``config``."""
    from training.model.network import EchoSegNet

    if not isinstance(config, ModelConfig):
        raise ValueError(f"build_model needs a ModelConfig, got {type(config).__name__}")
    return EchoSegNet(config)


def __getattr__(name: str):
    if name == "EchoSegNet":
        from training.model.network import EchoSegNet

        return EchoSegNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PRESETS", "EchoSegNet", "ModelConfig", "build_model", "get_preset", "list_presets"]
