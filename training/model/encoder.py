"""Encoders: the ResNet-18 encoder of the authors' network, the first family's U-Net encoder, and
the temporal context-aware encoders (TCE) built from either.

With TCE (the paper's section 3.1) every relative position j of the k-frame window has its own
encoder: the frame at position j always goes through encoder j, so each encoder learns what a
frame at that temporal distance from the target contributes. With TCE off, one shared encoder
is applied to every frame (the batch and the window are folded together for one pass).
"""

from __future__ import annotations

import torch
from torch import nn

from echoseg.config import BLOCKS_PER_STAGE, ModelConfig
from training.model.blocks import BasicBlock, DoubleConv, norm_layer


def level_widths(config: ModelConfig) -> list[int]:
    """Channels of each encoder level: ``width * 2**i`` for ``i < depth``."""
    return [config.level_width(i) for i in range(config.depth)]


class ResNetEncoder(nn.Module):
    """ResNet-18 as the authors use it: a ``7x7`` stride-2 stem to ``width`` channels and no
    max-pool, then ``depth`` stages of ``blocks`` :class:`BasicBlock` (stride 2 from the second
    stage on). With ``width = 64, depth = 4`` this is ResNet-18's ``layer1..layer4`` (64/128/256/512).

    ``(B, in_channels, S, S) -> [ (B, width * 2**i, S / 2**(i+1), S / 2**(i+1)) for i < depth ]``

    Initialised from scratch (the paper, section 3.5): Kaiming-normal convolutions (fan-out),
    norms at weight 1 and bias 0, as torchvision's ResNet.
    """

    def __init__(self, in_channels: int, width: int, depth: int, norm: str, blocks: int = 2) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth)]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            norm_layer(norm, width),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList(
            nn.Sequential(
                BasicBlock(c_in, c_out, norm, stride=1 if i == 0 else 2),
                *(BasicBlock(c_out, c_out, norm) for _ in range(blocks - 1)),
            )
            for i, (c_in, c_out) in enumerate(zip([width, *widths[:-1]], widths, strict=True))
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)  # (B, c, S, S) -> (B, width, S/2, S/2)
        features = []
        for stage in self.stages:
            x = stage(x)  # stage i: (B, width * 2**i, S / 2**(i+1), ...)
            features.append(x)
        return features


def build_encoder(config: ModelConfig) -> nn.Module:
    """One frame's encoder for ``config.architecture``."""
    if config.architecture == "resnet":
        return ResNetEncoder(config.in_channels, config.width, config.depth, config.norm, BLOCKS_PER_STAGE)
    return UNetEncoder(config.in_channels, config.width, config.depth, config.norm)


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
        self.encoders = nn.ModuleList(build_encoder(config) for _ in range(count))

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
