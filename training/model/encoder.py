"""Encoders: a U-Net encoder, and the temporal context-aware encoders (TCE) built from it.

With TCE (the paper's section 3.1) every relative position j of the k-frame window has its own
encoder: the frame at position j always goes through encoder j, so each encoder learns what a
frame at that temporal distance from the target contributes. With TCE off, one shared encoder
is applied to every frame (the batch and the window are folded together for one pass).
"""

from __future__ import annotations

import torch
from torch import nn

from echoseg.config import ModelConfig
from training.model.blocks import DoubleConv


def level_widths(config: ModelConfig) -> list[int]:
    """Channels of each encoder level: ``width * 2**i`` for ``i < depth``."""
    return [config.width * 2**i for i in range(config.depth)]


class UNetEncoder(nn.Module):
    """``depth`` levels of :class:`DoubleConv`, a 2x2 max-pool between consecutive levels.

    ``(B, in_channels, S, S) -> [ (B, width * 2**i, S / 2**i, S / 2**i) for i < depth ]``
    """

    def __init__(self, in_channels: int, width: int, depth: int, norm: str) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth)]
        self.pool = nn.MaxPool2d(2)
        self.levels = nn.ModuleList(
            DoubleConv(c_in, c_out, norm)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, level in enumerate(self.levels):
            x = level(x if i == 0 else self.pool(x))
            features.append(x)
        return features


class TemporalEncoders(nn.Module):
    """Encode a k-frame window into per-level, per-position features.

    ``frames (B, k * in_channels, S, S) -> features[level][position] (B, C_level, H_level, W_level)``
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_frames = config.num_frames
        self.in_channels = config.in_channels
        count = config.num_frames if config.tce else 1
        self.encoders = nn.ModuleList(
            UNetEncoder(config.in_channels, config.width, config.depth, config.norm) for _ in range(count)
        )

    @property
    def shared(self) -> bool:
        return len(self.encoders) == 1

    def forward(self, frames: torch.Tensor) -> list[list[torch.Tensor]]:
        k, c = self.num_frames, self.in_channels
        size = frames.shape[-2:]
        if self.shared:
            # (B, k*c, S, S) -> (B*k, c, S, S): one pass of the shared encoder over every frame
            levels = self.encoders[0](frames.reshape(-1, c, *size))
            # (B*k, C, H, W) -> k x (B, C, H, W)
            return [list(f.reshape(-1, k, *f.shape[1:]).unbind(1)) for f in levels]
        # (B, k*c, S, S) -> k x (B, c, S, S); frame j always goes through encoder j
        per_position = [enc(x) for enc, x in zip(self.encoders, frames.split(c, dim=1), strict=True)]
        return [list(level) for level in zip(*per_position, strict=True)]
