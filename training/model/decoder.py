"""U-Net decoder over the fused features, with skip connections, and the 1-channel logits head."""

from __future__ import annotations

import torch
from torch import nn

from training.model.blocks import DoubleConv


class UNetDecoder(nn.Module):
    """``features[i] (B, width * 2**i, S / 2**i, S / 2**i) for i < depth -> logits (B, 1, S, S)``.

    From the deepest level up: a 2x2 transposed convolution halves the channels and doubles the
    size, the skip features of the level above are concatenated, and a :class:`DoubleConv` merges
    them; a 1x1 convolution gives the logits.
    """

    def __init__(self, width: int, depth: int, norm: str, out_channels: int = 1) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth)]
        # index i upsamples level i+1 into level i
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth - 1)
        )
        self.blocks = nn.ModuleList(DoubleConv(2 * widths[i], widths[i], norm) for i in range(depth - 1))
        self.head = nn.Conv2d(width, out_channels, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for i in reversed(range(len(self.ups))):
            x = self.ups[i](x)  # (B, 2C, H/2, W/2) -> (B, C, H, W)
            x = self.blocks[i](torch.cat([x, features[i]], dim=1))  # (B, 2C, H, W) -> (B, C, H, W)
        return self.head(x)  # (B, width, S, S) -> (B, 1, S, S)
