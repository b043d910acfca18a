"""Small building blocks of the network: convolution, normalisation, activation.

The normalisation layer is chosen by name from the model configuration (``batch``,
``instance`` or ``group``), so the same architecture can be trained with large batches on a GPU
or with tiny batches on a CPU.
"""

from __future__ import annotations

import math

from torch import nn

from echoseg.config import NORMS


def norm_layer(norm: str, channels: int) -> nn.Module:
    """A normalisation layer over ``channels`` feature maps, chosen by name."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class ConvNormAct(nn.Sequential):
    """``Conv(kernel) -> Norm -> ReLU``; spatial size is kept (same padding)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """The U-Net block: two ``3x3 Conv -> Norm -> ReLU``. ``(B, in, H, W) -> (B, out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__(
            ConvNormAct(in_channels, out_channels, norm),
            ConvNormAct(out_channels, out_channels, norm),
        )
