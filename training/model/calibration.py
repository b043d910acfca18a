"""Adaptive spatiotemporal semantic calibration (ASSC, the paper's section 3.2).

For a neighbour frame n and the target frame t at one encoder level (C channels, H x W):

    Q  = T_q(F^n),  K = T_k(F^t)                     3x3 convolutions (the released code: unpadded)
    Q' = Summarize(Q),  K' = Summarize(K)            max-pool to 1, 3, 5, 7 bins, (B, C, 84)
    A  = sigmoid(Q' K'^T)                            channel correlation, (B, C, C)
    W  = A · G                                       eq. (3), per-sample kernel, (B, C, C, 3, 3)
    out = sum over dilations d of (F^n ∗_d W)        (B, C, H, W)

``G`` (C, C, 3, 3) is the learned motion-warping matrix, initialised to ones as in the paper.
``A · G`` is a matrix product (``aggregation="product"``): output channel o's C x 3 x 3 kernel is
``sum_j A[o, j] G[j]``, the A-weighted sum of G's C kernels (the released code's
``mm(att, G.view(C, 9 C))``). ``aggregation="elementwise"`` is the first family's ``A ⊙ G``
(``W[o, j] = A[o, j] G[o, j]``), kept for its checkpoints and as an ablation switch.

Scaling (``scaling``; the released code has none):
- ``"none"``: as above. With G = 1 at initialisation every kernel row is ``rowsum(A)`` times ones,
  so the calibrated map starts near ``9 C rowsum(A)`` times the local mean of F^n (up to ~10^6 at
  C = 512); the BatchNorm after the fusion is what brings it back to scale.
- ``"fanin"``: ``1/sqrt(84)`` inside the sigmoid (Q'K'^T sums 84 products, so without it the
  sigmoid saturates) and the kernel divided by its fan-in: ``9 C len(dilations)``, and by C more
  for the product (``A · G`` sums C rows of G). With G = 1 the calibrated map then starts as a
  weighted local average of F^n.

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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echoseg.config import AGGREGATIONS, CALIBRATION_FORMS, SCALINGS

BINS = (1, 3, 5, 7)
SUMMARY_LENGTH = sum(b * b for b in BINS)  # M = 84


def bin_edges(size: int, bins: int) -> list[tuple[int, int]]:
    """Bin i spans ``[floor(i * size / bins), ceil((i + 1) * size / bins))`` (adaptive pooling's rule)."""
    return [((i * size) // bins, -((-(i + 1) * size) // bins)) for i in range(bins)]


def bin_masks(size: int, bins: tuple[int, ...] = BINS) -> torch.Tensor:
    """``(sum(bins), size)``: row ``r`` is 0 inside the ``r``-th bin (all bin counts in turn) and
    -inf outside, so ``max(x + mask[r])`` over the axis is the maximum over that bin."""
    edges = [edge for b in bins for edge in bin_edges(size, b)]
    mask = np.full((len(edges), size), -np.inf, dtype=np.float32)  # built outside torch: a graph constant
    for r, (a, b) in enumerate(edges):
        mask[r, a:b] = 0.0
    return torch.from_numpy(mask)


def summary_layout(bins: tuple[int, ...] = BINS) -> tuple[list[int], list[int]]:
    """For each summary entry (bin count ``b``, row bin ``i``, column bin ``j``, row-major in ``b``
    then ``i`` then ``j``, as ``adaptive_max_pool2d(x, b).flatten()``): its row and its column in
    :func:`bin_masks` (both axes list the bins of every count in the same order)."""
    rows, cols, offset = [], [], 0
    for b in bins:
        for i in range(b):
            for j in range(b):
                rows.append(offset + i)
                cols.append(offset + j)
        offset += b
    return rows, cols


def summarize(x: torch.Tensor, bins: tuple[int, ...] = BINS) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, sum(b*b))``: max-pool summaries to each bin count in ``bins``
    (``adaptive_max_pool2d``'s bins, flattened and concatenated), in six graph operations.

    A max over a rectangle is the max over its rows of the max over its columns. Rows first: one
    broadcast add of a 0/-inf mask per row bin of every count and one max over H give every row
    bin's column profile; a gather lines those up with the summary's entries and a second masked
    max over W finishes each entry. Sums with 0 and maxima are exact, so this equals adaptive
    pooling bit for bit; the masks are constants once H and W are fixed, so it exports to ONNX
    for any H, W (the exporters reject adaptive pooling whose output does not divide the input)
    as a handful of nodes instead of a slice and a max per bin.
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    row_of, col_of = summary_layout(bins)
    row_mask = bin_masks(height, bins).unsqueeze(-1).to(x)  # (R, H, 1), R = sum(bins)
    col_mask = bin_masks(width, bins)[col_of].to(x)  # (M, W), M = sum(b*b): each entry's column bin
    row_index = torch.from_numpy(np.asarray(row_of, dtype=np.int64)).to(x.device)  # (M,)
    # (B, C, 1, H, W) + (R, H, 1) -> (B, C, R, H, W) -> max over H -> (B, C, R, W)
    rows = (x.unsqueeze(2) + row_mask).amax(dim=3)
    # (B, C, R, W) -> (B, C, M, W): each entry's row bin
    rows = rows.index_select(2, row_index)
    # (B, C, M, W) + (M, W) -> max over W -> (B, C, M)
    return (rows + col_mask).amax(dim=-1)


def slice_max_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, bins, bins)`` as static slices and maxima, rows then columns."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    # (B, C, H, W) -> (B, C, bins, W)
    rows = torch.stack([x[..., a:b, :].amax(dim=-2) for a, b in bin_edges(height, bins)], dim=-2)
    # (B, C, bins, W) -> (B, C, bins, bins)
    return torch.stack([rows[..., a:b].amax(dim=-1) for a, b in bin_edges(width, bins)], dim=-1)


def summarize_slices(x: torch.Tensor, bins: tuple[int, ...] = BINS) -> torch.Tensor:
    """:func:`summarize` written as a static slice and a max per bin (a slice, a max, a stack per
    bin and axis: about 300 graph nodes per summary); the reference :func:`summarize` is tested
    against, and the default form (:data:`SUMMARY_DEFAULT`)."""
    return torch.cat([slice_max_pool(x, b).flatten(2) for b in bins], dim=-1)


# summary form -> function; the names are those of echoseg.forms.SUMMARY_FORM and the exports' metadata
SUMMARIES = {"masked-max": summarize, "slices": summarize_slices}
# The form networks are built with. Measured side by side in ONNX Runtime (CPU, 1 thread;
# benchmarks/results/graph_ops.json and the single-summary timings in docs/export.md): the masked
# form has a tenth of the nodes and is about as fast at batch 1, but its (B, C, R, H, W) broadcast
# and middle-axis maxima are several times slower at batch 16, so the slice form stays the default.
SUMMARY_DEFAULT = "slices"


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


def aggregate(attention: torch.Tensor, warp: torch.Tensor, aggregation: str) -> torch.Tensor:
    """The kernel from the attention and G: ``(B, C, C), (C, C, 3, 3) -> (B, C, C, 3, 3)``.

    ``product`` (eq. 3): ``W[b] = A[b] @ G.view(C, 9 C)``; ``elementwise``: ``W[b] = A[b] ⊙ G``.
    """
    if aggregation == "product":
        c = warp.shape[0]
        # (B, C, C) @ (C, C*9) -> (B, C, C*9) -> (B, C, C, 3, 3)
        return torch.matmul(attention, warp.reshape(c, -1)).reshape(attention.shape[0], c, *warp.shape[1:])
    if aggregation == "elementwise":
        return attention[..., None, None] * warp  # (B, C, C) -> (B, C, C, 3, 3)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


class SemanticCalibration(nn.Module):
    """ASSC for one (level, neighbour position): warps F^n towards the target frame's F^t.

    ``forward(neighbour (B, C, H, W), target (B, C, H, W)) -> calibrated neighbour (B, C, H, W)``

    ``transform_padding`` is the padding of T_q/T_k: 0 in the released code (the ResNet family),
    1 in the first family.
    """

    def __init__(
        self,
        channels: int,
        dilations: tuple[int, ...] = (1,),
        form: str = "conv",
        aggregation: str = "product",
        scaling: str = "none",
        transform_padding: int = 0,
    ) -> None:
        super().__init__()
        if not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError(f"dilations must be positive integers, got {dilations}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        self.channels = channels
        self.dilations = tuple(int(d) for d in dilations)
        self.aggregation = aggregation
        self.scaling = scaling
        self.transform_q = nn.Conv2d(channels, channels, 3, padding=transform_padding)  # T_q
        self.transform_k = nn.Conv2d(channels, channels, 3, padding=transform_padding)  # T_k
        self.warp = nn.Parameter(torch.ones(channels, channels, 3, 3))  # G, ones as in the paper
        self.form = form
        self.summary = SUMMARY_DEFAULT  # how Summarize is written (SUMMARIES); the same numbers either way

    @property
    def form(self) -> str:
        return self._form

    @form.setter
    def form(self, form: str) -> None:
        if form not in CALIBRATION_FORMS:
            raise ValueError(f"calibration form must be one of {CALIBRATION_FORMS}, got {form!r}")
        self._form = form

    def attention(self, neighbour: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``A = sigmoid(Q' K'^T)`` (``/ sqrt(84)`` inside when fan-in scaled): ``(B, C, C)``."""
        summarize_ = SUMMARIES[self.summary]
        q = summarize_(self.transform_q(neighbour))  # (B, C, H', W') -> (B, C, 84)
        k = summarize_(self.transform_k(target))  # (B, C, H', W') -> (B, C, 84)
        logits = torch.matmul(q, k.transpose(1, 2))  # (B, C, 84) @ (B, 84, C) -> (B, C, C)
        if self.scaling == "fanin":
            logits = logits * (1.0 / math.sqrt(SUMMARY_LENGTH))
        return torch.sigmoid(logits)

    def kernel_scale(self) -> float:
        """The factor on W: 1, or 1 / fan-in (``9 C len(dilations)``, times C for the product)."""
        if self.scaling == "none":
            return 1.0
        fan_in = 9 * self.channels * len(self.dilations)
        return 1.0 / (fan_in * (self.channels if self.aggregation == "product" else 1))

    def kernel(self, neighbour: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-sample calibration kernel ``W`` (eq. 3): ``(B, C, C, 3, 3)``."""
        kernel = aggregate(self.attention(neighbour, target), self.warp, self.aggregation)
        scale = self.kernel_scale()
        return kernel if scale == 1.0 else kernel * scale

    def forward(self, neighbour: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return CALIBRATE[self.form](neighbour, self.kernel(neighbour, target), self.dilations)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, dilations={self.dilations}, form={self.form!r}, "
            f"aggregation={self.aggregation!r}, scaling={self.scaling!r}"
        )
