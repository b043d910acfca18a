"""Bi-directional spatiotemporal semantics fusion (BSSF, the paper's section 3.3).

At one level, with the target frame at position ``target`` of a k-frame window:

    F~^t = Conv1x1([F^0 ∗ W^0, ..., F^t, ..., F^{k-1} ∗ W^{k-1}])

Every non-target position has its own :class:`SemanticCalibration` (its own T_q, T_k and G);
for k = 3 centred this is the paper's ``[F^{t-1} ∗ W^{t-1}, F^t, F^{t+1} ∗ W^{t+1}]``. Without
calibration (BSSF off, or a level that is not calibrated) the raw features are concatenated and
fused by the same 1x1 convolution. With k = 1 the single feature map passes through unchanged.
In the ResNet family the 1x1 convolution is followed by a normalisation (the released
``Conv1x1 -> BN``); in the U-Net family it has a bias and no normalisation.
"""

from __future__ import annotations

import torch
from torch import nn

from training.model.blocks import norm_layer
from training.model.calibration import SemanticCalibration


class LevelFusion(nn.Module):
    """Fuse the k per-position features of one level into the target frame's features.

    ``features: k x (B, C, H, W) -> (B, C, H, W)``
    """

    def __init__(
        self,
        channels: int,
        num_frames: int,
        target: int,
        calibrate: bool,
        norm: str | None = None,
        **calibration,
    ) -> None:
        """``norm``: the normalisation after the 1x1 fusion (None: a biased 1x1 conv alone);
        ``calibration``: keyword arguments of every :class:`SemanticCalibration`."""
        super().__init__()
        if not 0 <= target < num_frames:
            raise ValueError(f"target position {target} outside a window of {num_frames} frames")
        self.num_frames = num_frames
        self.target = target
        neighbours = [j for j in range(num_frames) if j != target] if calibrate else []
        # keys are positions in the window ("0", "2" for k=3 centred)
        self.calibrations = nn.ModuleDict(
            {str(j): SemanticCalibration(channels, **calibration) for j in neighbours}
        )
        if num_frames == 1:
            self.fuse = nn.Identity()
        elif norm is None:
            self.fuse = nn.Conv2d(num_frames * channels, channels, 1)
        else:
            self.fuse = nn.Sequential(
                nn.Conv2d(num_frames * channels, channels, 1, bias=False), norm_layer(norm, channels)
            )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.num_frames == 1:
            return features[0]
        target = features[self.target]
        aligned = [self._align(j, f, target) for j, f in enumerate(features)]
        return self.fuse(torch.cat(aligned, dim=1))  # k x (B, C, H, W) -> (B, k*C, H, W) -> (B, C, H, W)

    def _align(self, position: int, feature: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        key = str(position)
        return self.calibrations[key](feature, target) if key in self.calibrations else feature
