"""Small building blocks of the network: convolution, normalisation, activation, the ResNet
basic block and the LinkNet decoder block.

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


class BasicBlock(nn.Module):
    """ResNet's basic block: ``3x3 Conv(stride) -> Norm -> ReLU -> 3x3 Conv -> Norm``, plus the
    input (through a ``1x1 Conv(stride) -> Norm`` projection when the shape changes), then ReLU.

    ``(B, in, H, W) -> (B, out, H / stride, W / stride)``
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_layer(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = norm_layer(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                norm_layer(norm, out_channels),
            )

    def forward(self, x):
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class LinkNetBlock(nn.Sequential):
    """LinkNet's decoder block: ``1x1 Conv (in -> in/4) -> 3x3 transposed Conv, stride 2 -> 1x1 Conv
    (-> out)``, each followed by Norm and ReLU. The bottleneck keeps at least ``min_channels``.

    ``(B, in, H, W) -> (B, out, 2H, 2W)``
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str, min_channels: int = 1) -> None:
        mid = max(min_channels, in_channels // 4)
        super().__init__(
            ConvNormAct(in_channels, mid, norm, kernel_size=1),
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=False),
            norm_layer(norm, mid),
            nn.ReLU(inplace=True),
            ConvNormAct(mid, out_channels, norm, kernel_size=1),
        )
