"""Adaptive spatiotemporal semantic calibration (ASSC, the paper's section 3.2).

For a neighbour frame n and the target frame t at one encoder level (C channels, H x W):

    Q  = T_q(F^n),  K = T_k(F^t)                     3x3 convolutions, (B, C, H, W)
    Q' = Summarize(Q),  K' = Summarize(K)            max-pool to 1, 3, 5, 7 bins, (B, C, 84)
    A  = sigmoid(Q' K'^T / sqrt(84))                 channel correlation, (B, C, C)
    W  = A ⊙ G / (9 C)                               per-sample kernel, (B, C, C, 3, 3)
    out = mean over dilations d of (F^n ∗_d W)       (B, C, H, W)

``G`` (C, C, 3, 3) is the learned motion-warping matrix, initialised to ones as in the paper.

Scaling (keeps activations finite; not in the paper's equations):
- ``1/sqrt(84)`` inside the sigmoid: Q'K'^T sums 84 products, so without it the sigmoid
  saturates and its gradient vanishes.
- ``1/(9 C)`` on the kernel (fan-in scaling): with G = 1 and A in (0, 1) every output is a sum of
  9 C non-negative terms, which would grow with the width; scaled, the calibrated map starts as a
  weighted local average of F^n and stays on the scale of the features.
- dilations are combined by their mean, for the same reason.

The kernel W differs per sample, so it cannot be an ordinary convolution weight. Two numerically
equal forms apply it (``form``):
- ``conv``: a grouped convolution with the batch folded into the groups (input 1 x (B C) x H x W,
  weight (B C) x C x 3 x 3, groups = B). Fast, but ONNX's ``group`` is static: it exports only
  with a fixed batch.
- ``matmul``: pad once, take the 9 shifted views of F^n (each summed over the dilations, since the
  same kernel serves every dilation) and sum 9 per-tap batched MatMuls (B, C, C) @ (B, C, H W).
  Exports with a dynamic batch and runs everywhere; does len(dilations) times fewer multiply-adds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from echoseg.config import CALIBRATION_FORMS

BINS = (1, 3, 5, 7)
SUMMARY_LENGTH = sum(b * b for b in BINS)  # M = 84


def bin_edges(size: int, bins: int) -> list[tuple[int, int]]:
    """Bin i spans ``[floor(i * size / bins), ceil((i + 1) * size / bins))`` (adaptive pooling's rule)."""
    return [((i * size) // bins, -((-(i + 1) * size) // bins)) for i in range(bins)]


def adaptive_max_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, bins, bins)``, equal to ``F.adaptive_max_pool2d(x, bins)``.

    Written as static slices and maxima, so it exports to ONNX for any H, W (the ONNX exporters
    reject adaptive pooling whose output does not divide the input). A max over a rectangle is a
    max over its rows of the max over its columns, so rows are reduced first.
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    # (B, C, H, W) -> (B, C, bins, W)
    rows = torch.stack([x[..., a:b, :].amax(dim=-2) for a, b in bin_edges(height, bins)], dim=-2)
    # (B, C, bins, W) -> (B, C, bins, bins)
    return torch.stack([rows[..., a:b].amax(dim=-1) for a, b in bin_edges(width, bins)], dim=-1)


def summarize(x: torch.Tensor, bins: tuple[int, ...] = BINS) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, sum(b*b))``: multi-scale max-pool summaries, flattened and concatenated."""
    return torch.cat([adaptive_max_pool(x, b).flatten(2) for b in bins], dim=-1)


def calibrate_conv(x: torch.Tensor, kernel: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """Per-sample 3x3 kernels as one grouped convolution; sum over dilations.

    ``x (B, C, H, W)``, ``kernel (B, C_out, C_in, 3, 3)`` -> ``(B, C_out, H, W)``
    """
    b, c, h, w = x.shape
    x = x.reshape(1, b * c, h, w)  # (B, C, H, W) -> (1, B*C, H, W)
    weight = kernel.reshape(b * kernel.shape[1], c, 3, 3)  # (B, C_out, C, 3, 3) -> (B*C_out, C, 3, 3)
    out = sum(F.conv2d(x, weight, padding=d, dilation=d, groups=b) for d in dilations)
    return out.reshape(b, -1, h, w)  # (1, B*C_out, H, W) -> (B, C_out, H, W)


def shifted_view(
    padded: torch.Tensor, pad: int, u: int, v: int, dilation: int, h: int, w: int
) -> torch.Tensor:
    """The input seen by kernel tap ``(u, v)`` at ``dilation``: ``(B, C, H + 2p, W + 2p) -> (B, C, H, W)``."""
    top, left = pad + (u - 1) * dilation, pad + (v - 1) * dilation
    return padded[..., top : top + h, left : left + w]


def calibrate_matmul(x: torch.Tensor, kernel: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """Per-sample 3x3 kernels as 9 per-tap batched MatMuls over shifted views; sum over dilations.

    The same kernel is applied at every dilation, and convolution is linear in its input, so
    ``sum_d conv_d(x, W) = sum_taps W[:, :, u, v] @ (sum_d view_d(u, v))``: the shifted views are
    summed over the dilations first (additions), then each tap needs one MatMul. This does
    ``len(dilations)`` times fewer multiply-adds than the ``conv`` form for the same result.

    ``x (B, C, H, W)``, ``kernel (B, C_out, C_in, 3, 3)`` -> ``(B, C_out, H, W)``
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    pad = max(dilations)
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
    out = None
    for u in range(3):
        for v in range(3):
            if (u, v) == (1, 1):
                view = x * float(len(dilations))  # the centre tap sees x at every dilation
            else:
                view = sum(shifted_view(padded, pad, u, v, d, h, w) for d in dilations)
            term = torch.matmul(kernel[..., u, v], view.flatten(2))  # (B, C_out, C) @ (B, C, H*W)
            out = term if out is None else out + term
    return out.reshape(out.shape[0], out.shape[1], h, w)  # (B, C_out, H*W) -> (B, C_out, H, W)


CALIBRATE = {"conv": calibrate_conv, "matmul": calibrate_matmul}


class SemanticCalibration(nn.Module):
    """ASSC for one (level, neighbour position): warps F^n towards the target frame's F^t.

    ``forward(neighbour (B, C, H, W), target (B, C, H, W)) -> calibrated neighbour (B, C, H, W)``
    """

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2, 3), form: str = "conv") -> None:
        super().__init__()
        if not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError(f"dilations must be positive integers, got {dilations}")
        self.channels = channels
        self.dilations = tuple(int(d) for d in dilations)
        self.transform_q = nn.Conv2d(channels, channels, 3, padding=1)  # T_q
        self.transform_k = nn.Conv2d(channels, channels, 3, padding=1)  # T_k
        self.warp = nn.Parameter(torch.ones(channels, channels, 3, 3))  # G, ones as in the paper
        self.form = form

    @property
    def form(self) -> str:
        return self._form

    @form.setter
    def form(self, form: str) -> None:
        if form not in CALIBRATION_FORMS:
            raise ValueError(f"calibration form must be one of {CALIBRATION_FORMS}, got {form!r}")
        self._form = form

    def kernel(self, neighbour: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-sample calibration kernel ``W = A ⊙ G / (9 C)``: ``(B, C, C, 3, 3)``."""
        q = summarize(self.transform_q(neighbour))  # (B, C, H, W) -> (B, C, 84)
        k = summarize(self.transform_k(target))  # (B, C, H, W) -> (B, C, 84)
        attention = torch.sigmoid(torch.matmul(q, k.transpose(1, 2)) * (1.0 / math.sqrt(SUMMARY_LENGTH)))
        scale = 1.0 / (9 * self.channels * len(self.dilations))  # fan-in and mean over dilations
        return attention[..., None, None] * (self.warp * scale)  # (B, C, C) -> (B, C, C, 3, 3)

    def forward(self, neighbour: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return CALIBRATE[self.form](neighbour, self.kernel(neighbour, target), self.dilations)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, dilations={self.dilations}, form={self.form!r}"
