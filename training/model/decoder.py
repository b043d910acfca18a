"""Decoders over the fused features, with their 1-channel logits heads: the authors' LinkNet
decoder (ResNet family) and the first family's U-Net decoder."""

from __future__ import annotations

import torch
from torch import nn

from training.model.blocks import DoubleConv, LinkNetBlock


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


class LinkNetDecoder(nn.Module):
    """``features[i] (B, width * 2**i, S / 2**(i+1), ...) for i < depth -> logits (B, 1, S, S)``.

    The released decoder: from the deepest stage up, a :class:`LinkNetBlock` halves the channels
    and doubles the size and the stage above is added (additive skips); the last block takes stage
    0 to full resolution with ``width / 2`` channels, then ``3x3 Conv -> ReLU -> 3x3 Conv`` give
    the logits.

    Narrow networks: the released rule (bottleneck ``C/4``, head ``width/2``) leaves a width-4
    network one channel at full resolution, and such a ``tiny`` did not learn to segment in the
    ablation's budget (Dice 0 at k = 1 after 240 steps). So the bottlenecks and the head keep at
    least ``MIN_CHANNELS``; from width 32 up (``paper``: 64) this changes nothing.
    """

    MIN_CHANNELS = 8

    def __init__(self, width: int, depth: int, norm: str, out_channels: int = 1) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth)]
        head = max(self.MIN_CHANNELS, width // 2)
        # index i takes stage i to the size and channels of stage i-1 (index 0: to the input)
        self.blocks = nn.ModuleList(
            LinkNetBlock(widths[i], widths[i - 1] if i else head, norm, self.MIN_CHANNELS)
            for i in range(depth)
        )
        self.refine = nn.Sequential(nn.Conv2d(head, head, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(head, out_channels, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for i in reversed(range(1, len(self.blocks))):
            x = self.blocks[i](x) + features[i - 1]  # (B, 2C, H/2, W/2) -> (B, C, H, W), + skip
        x = self.blocks[0](x)  # (B, width, S/2, S/2) -> (B, width/2, S, S)
        return self.head(self.refine(x))  # (B, width/2, S, S) -> (B, 1, S, S)
